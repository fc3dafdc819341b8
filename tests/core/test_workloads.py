"""What canaryd creates beside the app team's Deployment: the primary and two Services."""

from __future__ import annotations

import copy

import jsonpatch

from canaryd.api.models import Canary
from canaryd.core.convergence import run_replicas
from canaryd.core.revision import REVISION_ANNOTATION, deployment_template_hash
from canaryd.core.workloads import (
    primary_deployment,
    primary_template_patch,
    service_matches,
    services,
    target_problem,
    workload_state,
)

CANARY = Canary.model_validate(
    {
        "metadata": {"name": "payments-api", "namespace": "payments", "uid": "uid-1"},
        "spec": {
            "targetRef": {"name": "payments-api"},
            "service": {"port": 8080},
            "routeRefs": [{"name": "payments-api"}],
            "analysis": {"interval": "10s", "stepWeights": [10, 50]},
        },
    }
)

TARGET = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "payments-api", "namespace": "payments", "labels": {"team": "payments"}},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "payments-api"}},
        "template": {
            "metadata": {"labels": {"app": "payments-api", "version": "1"}},
            "spec": {"containers": [{"name": "app", "image": "payments:1.0"}]},
        },
    },
}


def test_primary_selects_only_its_own_pods_and_is_owned_by_the_canary():
    primary = primary_deployment(TARGET, CANARY)
    assert primary["metadata"]["name"] == "payments-api-primary"
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "payments-api-primary"}}
    assert primary["spec"]["template"]["metadata"]["labels"] == {
        "app": "payments-api-primary",
        "version": "1",
        "canaryd.io/role": "primary",
    }
    assert primary["spec"]["template"]["spec"] == TARGET["spec"]["template"]["spec"]
    assert primary["spec"]["replicas"] == 3
    owner = primary["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Canary",
        "payments-api",
        "uid-1",
        True,
    )
    assert primary["metadata"]["annotations"][REVISION_ANNOTATION] == deployment_template_hash(TARGET)
    assert TARGET["spec"]["selector"]["matchLabels"] == {"app": "payments-api"}, "target left untouched"


def test_services_split_primary_and_canary_pods():
    primary_svc, canary_svc = services(TARGET, CANARY)
    assert primary_svc["metadata"]["name"] == "payments-api-primary"
    assert primary_svc["spec"]["selector"] == {"app": "payments-api-primary"}
    assert canary_svc["metadata"]["name"] == "payments-api-canary"
    assert canary_svc["spec"]["selector"] == {"app": "payments-api"}
    assert primary_svc["spec"]["ports"][0]["port"] == 8080
    assert service_matches(primary_svc, primary_svc)
    assert not service_matches(canary_svc, primary_svc)
    assert not service_matches(None, primary_svc)


def test_template_patch_carries_a_new_revision_onto_the_primary():
    primary = primary_deployment(TARGET, CANARY)
    new_target = copy.deepcopy(TARGET)
    new_target["spec"]["template"]["spec"]["containers"][0]["image"] = "payments:2.0"
    patched = jsonpatch.apply_patch(primary, primary_template_patch(new_target))
    assert patched["spec"]["template"]["spec"]["containers"][0]["image"] == "payments:2.0"
    assert patched["spec"]["template"]["metadata"]["labels"]["app"] == "payments-api-primary"
    assert workload_state(patched, primary=True).template_hash == deployment_template_hash(new_target)


def test_workload_state_reads_readiness():
    deployment = copy.deepcopy(TARGET)
    deployment["metadata"]["generation"] = 2
    deployment["status"] = {
        "observedGeneration": 2,
        "readyReplicas": 3,
        "updatedReplicas": 3,
        "availableReplicas": 3,
    }
    state = workload_state(deployment)
    assert state.rolled_out and state.desired_replicas == 3
    deployment["status"]["readyReplicas"] = 1
    assert not workload_state(deployment).rolled_out


def test_target_problems_are_explained():
    assert target_problem(TARGET) == ""
    no_selector = copy.deepcopy(TARGET)
    del no_selector["spec"]["selector"]
    assert "no spec.selector.matchLabels" in target_problem(no_selector)
    mismatch = copy.deepcopy(TARGET)
    mismatch["spec"]["template"]["metadata"]["labels"]["app"] = "other"
    assert "do not match its selector" in target_problem(mismatch)


def test_the_canary_runs_as_many_replicas_as_the_primary_and_never_none() -> None:
    primary = primary_deployment(TARGET, CANARY)
    assert run_replicas(workload_state(primary, primary=True)) == 3
    scaled_to_zero = copy.deepcopy(primary)
    scaled_to_zero["spec"]["replicas"] = 0
    assert run_replicas(workload_state(scaled_to_zero, primary=True)) == 1
    assert run_replicas(None) == 1


def test_scaling_the_target_up_from_zero_labels_its_pods_as_the_canary_and_keeps_its_revision():
    from canaryd.core.revision import deployment_template_hash
    from canaryd.core.workloads import scale_patch

    idle = copy.deepcopy(TARGET)
    idle["spec"]["replicas"] = 0
    patch = scale_patch(idle, 3)
    assert patch == {
        "spec": {"replicas": 3, "template": {"metadata": {"labels": {"canaryd.io/role": "canary"}}}}
    }
    labelled = copy.deepcopy(idle)
    labelled["spec"]["template"]["metadata"]["labels"]["canaryd.io/role"] = "canary"
    assert deployment_template_hash(labelled) == deployment_template_hash(idle), "not a new revision"
    assert scale_patch(TARGET, 5) == {"spec": {"replicas": 5}}, "running pods are never restarted for it"
    assert scale_patch(idle, 0) == {"spec": {"replicas": 0}}


def test_the_primary_s_copy_of_the_target_s_hpa_scales_the_primary_and_is_owned_by_the_canary():
    from canaryd.core import autoscaling

    source = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "payments-api", "namespace": "payments", "labels": {"team": "payments"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-api"},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}],
        },
    }
    assert autoscaling.scale_target(source) == ("Deployment", "payments-api")
    assert (
        autoscaling.scale_target({"spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "x"}}}) is None
    )
    copy_ = autoscaling.primary_autoscaler(source, CANARY)
    assert copy_["metadata"]["name"] == "payments-api-primary"
    assert copy_["spec"]["scaleTargetRef"]["name"] == "payments-api-primary"
    assert {k: v for k, v in copy_["spec"].items() if k != "scaleTargetRef"} == {
        k: v for k, v in source["spec"].items() if k != "scaleTargetRef"
    }
    assert copy_["metadata"]["ownerReferences"][0]["kind"] == "Canary"
    assert autoscaling.copy_of(copy_) == "payments-api" and autoscaling.copy_of(source) is None
    assert autoscaling.in_step(copy_, copy_)
    edited = copy.deepcopy(source)
    edited["spec"]["maxReplicas"] = 20
    assert not autoscaling.in_step(copy_, autoscaling.primary_autoscaler(edited, CANARY))
    assert autoscaling.spec_patch(copy_) == [{"op": "replace", "path": "/spec", "value": copy_["spec"]}]
    assert (
        autoscaling.source_autoscaler([edited, {"metadata": {"name": "a-first"}}])["metadata"]["name"]
        == "a-first"
    )
