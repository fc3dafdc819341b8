"""The memory bench's own parts: the copies it serves, the stand-in API's writes, and its arithmetic.

The figure is only worth something if the copies are what a real cluster
would hold (as large as the captured objects, pointing at each other, a
Canary that is mid-run on the revision its target runs, due for one step)
and if the stand-in answers writes as kube-apiserver would; a copy with a
new revision would start a fresh run, and one not due would take no step.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bench.bench_memory import (
    PER_CANARY,
    SHAPES,
    ApiPath,
    Reading,
    StandInApi,
    clone,
    due_now,
    marginal_lines,
    merge_patch,
    parse_api_path,
    proc_status_kib,
    table,
    uids_of,
)
from canaryd.api.models import Canary
from canaryd.core import schedule
from canaryd.core.revision import deployment_template_hash

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def shapes():
    return json.loads(SHAPES.read_text())["objects"]


def per_canary(shapes):
    return [shapes[key] for key in PER_CANARY]


def test_the_captured_shapes_are_what_a_real_api_server_sends(shapes):
    for obj in per_canary(shapes):
        assert obj["metadata"].get("managedFields"), obj["metadata"]["name"]
    assert shapes["canary"]["status"]["step"] >= 1
    assert deployment_template_hash(shapes["target"]) == shapes["canary"]["status"]["revision"]


def test_copies_are_as_large_as_the_original_and_point_only_at_each_other(shapes):
    original = per_canary(shapes)
    first, second = clone(original, 1, 100), clone(original, 2, 200)
    text = json.dumps(first)
    assert not any(uid in text for uid in uids_of(original))
    assert set(uids_of(first)).isdisjoint(uids_of(second))
    for copy_, source in zip(first, original, strict=True):
        assert copy_["metadata"]["namespace"] == "team-00001"
        assert copy_["metadata"]["name"] == source["metadata"]["name"]
        assert abs(len(json.dumps(copy_)) - len(json.dumps(source))) < 100
        if "managedFields" in source["metadata"]:
            assert len(copy_["metadata"]["managedFields"]) == len(source["metadata"]["managedFields"])
    assert [o["metadata"]["resourceVersion"] for o in first] == [str(100 + i) for i in range(len(first))]
    canary, target, primary, route = first[0], first[1], first[2], first[5]
    assert primary["metadata"]["ownerReferences"][0]["uid"] == canary["metadata"]["uid"]
    assert canary["status"]["routeGenerations"][0]["uid"] == route["metadata"]["uid"]
    assert deployment_template_hash(target) == canary["status"]["revision"]


def test_a_copy_is_due_for_one_step_now_and_not_again_for_an_interval(shapes):
    canary = Canary.model_validate(due_now(shapes["canary"], "1h", NOW))
    due = schedule.next_analysis_at(canary, canary.status)
    assert due is not None and NOW - timedelta(minutes=2) < due <= NOW
    deadline = schedule.progress_deadline_at(canary, canary.status)
    assert deadline is not None and deadline > NOW + timedelta(minutes=5)
    after_step = canary.status.model_copy(update={"last_step_time": NOW})
    assert schedule.next_analysis_at(canary, after_step) == NOW + timedelta(hours=1)


def test_merge_patch_follows_rfc_7386():
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}
    patch = {"a": "z", "c": {"f": None}, "list": [3], "new": {"x": 1}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}, "list": [3], "new": {"x": 1}}
    assert target == {"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/services", ApiPath("services")),
        ("/api/v1/namespaces/t/services/web", ApiPath("services", "t", "web")),
        ("/apis/canaryd.io/v1alpha1/namespaces/t/canaries/w/status", ApiPath("canaries", "t", "w", "status")),
        ("/apis/gateway.networking.k8s.io/v1/gatewayclasses/gc", ApiPath("gatewayclasses", None, "gc")),
        ("/apis/apps/v1/namespaces/t/deployments", ApiPath("deployments", "t")),
        ("/version", None),
        ("/apis", None),
    ],
)
def test_api_paths_are_taken_apart(path, expected):
    assert parse_api_path(path) == expected


def stand_in(shapes) -> StandInApi:
    api = StandInApi()
    for obj in clone(per_canary(shapes), 0, 10):
        api.put(obj)
    api.version = 20
    return api


def test_a_status_patch_changes_only_the_status_and_a_failed_test_is_a_conflict(shapes):
    api = stand_in(shapes)
    path = ApiPath("canaries", "team-00000", "payments-api", "status")
    ops = [{"op": "replace", "path": "/status/canaryWeight", "value": 25},
           {"op": "replace", "path": "/spec/analysis/threshold", "value": 1}]  # fmt: skip
    code, written = api.write(path, "PATCH", "application/json-patch+json", ops)
    assert code == 200
    assert written["status"]["canaryWeight"] == 25
    assert written["spec"]["analysis"]["threshold"] == shapes["canary"]["spec"]["analysis"]["threshold"]
    assert written["metadata"]["resourceVersion"] == "21"
    assert api.written_canaries == {("team-00000", "payments-api")}
    stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": "10"}, *ops]
    code, answer = api.write(path, "PATCH", "application/json-patch+json", stale)
    assert (code, answer["reason"]) == (409, "Conflict")


def test_a_spec_change_to_a_deployment_is_observed_at_once(shapes):
    api = stand_in(shapes)
    path = ApiPath("deployments", "team-00000", "payments-api")
    before = api.objects["deployments"][("team-00000", "payments-api")]
    code, written = api.write(path, "PATCH", "application/merge-patch+json", {"spec": {"replicas": 7}})
    assert code == 200 and written["spec"]["replicas"] == 7
    generation = before["metadata"]["generation"] + 1
    assert written["metadata"]["generation"] == generation
    assert written["status"]["observedGeneration"] == generation
    assert written["metadata"]["managedFields"] == before["metadata"]["managedFields"]


def test_proc_status_sizes_are_read_in_kib():
    text = "Name:\tpython\nVmPeak:\t  500000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t3\n"
    assert proc_status_kib(text) == {"VmPeak": 500000, "VmHWM": 204800, "VmRSS": 102400}


def reading(size: int, trim: bool, loaded_mib: float) -> Reading:
    return Reading(size, trim, 100 * 1024, int(loaded_mib * 1024), int(loaded_mib * 1024), 1.0, {}, {})


def test_the_table_gives_per_canary_figures_and_the_trimmed_to_untrimmed_ratio():
    readings = [reading(1000, True, 150), reading(1000, False, 200), reading(10000, True, 600)]
    assert readings[0].per_canary_kib == pytest.approx(51.2)
    printed = table(readings)
    assert "1,000 Canaries, trimmed/untrimmed: loaded 0.75, per Canary 0.50" in printed
    assert "10,000 Canaries, trimmed" not in printed
    assert marginal_lines(readings) == ["trim on: 51.2 KiB per Canary from 1,000 to 10,000"]
