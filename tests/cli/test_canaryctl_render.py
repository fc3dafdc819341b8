"""What a person reads from `kubectl canary list` and `status`, checked line by line on fixed objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from canaryd.cli import ctl_render as render
from canaryd.cli.ctl_actions import Outcome, judge, wanted_state_holds

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def iso(delta_seconds: float) -> str:
    return (NOW - timedelta(seconds=delta_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def canary(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "Canary",
        "metadata": {
            "name": "payments-api",
            "namespace": "payments",
            "uid": "u-1",
            "creationTimestamp": iso(3 * 3600 + 300),
        },
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-api"},
            "service": {"port": 8080},
            "routeRefs": [
                {"kind": "HTTPRoute", "name": "payments-api"},
                {"kind": "GRPCRoute", "name": "rpc"},
            ],
            "analysis": {
                "interval": "1m",
                "threshold": 5,
                "stepWeights": [5, 10, 25, 50],
                "metrics": [
                    {
                        "name": "success-rate",
                        "templateRef": {"name": "success-rate"},
                        "thresholdRange": {"min": 99},
                    },
                    {
                        "name": "latency-p99",
                        "templateRef": {"name": "latency-p99"},
                        "thresholdRange": {"max": 500},
                    },
                    {"name": "saturation", "query": "up", "thresholdRange": {"min": 0.1, "max": 0.8}},
                ],
            },
        },
        "status": status,
    }


RUNNING = canary(
    phase="Progressing",
    canaryWeight=10,
    step=2,
    failedChecks=1,
    analysisErrors=0,
    revision="7d9f8c6b5",
    lastPromotedRevision="5b6c4d3e2",
    lastStepTime=iso(42),
    metrics=[
        {"name": "success-rate", "verdict": "Pass", "value": 99.8712, "checkedAt": iso(8)},
        {
            "name": "latency-p99",
            "verdict": "Fail",
            "value": 612.0,
            "checkedAt": iso(8),
            "message": "612 is above 500",
        },
    ],
    conditions=[
        {
            "type": "Ready",
            "status": "True",
            "reason": "Initialized",
            "message": "primary ready",
            "lastTransitionTime": iso(3600),
        }
    ],
)
MARKS = render.Marks.for_encoding("utf-8")


def test_list_table_has_kubectl_columns_and_values() -> None:
    other = canary(phase="Succeeded", canaryWeight=0, failedChecks=0)
    other["metadata"] = {**other["metadata"], "name": "checkout", "namespace": "shop"}
    text = render.list_table([RUNNING, other], all_namespaces=True, wide=False, now=NOW)
    lines = text.splitlines()
    assert lines[0].split() == [
        "NAMESPACE", "NAME", "PHASE", "WEIGHT", "FAILED", "READY", "REASON", "SINCE", "AGE",
    ]
    assert lines[1].split() == [
        "payments", "payments-api", "Progressing", "10%", "1/5", "True", "Initialized", "60m", "3h5m",
    ]
    assert lines[2].split() == ["shop", "checkout", "Succeeded", "0%", "0/5", "-", "-", "-", "3h5m"]
    # Columns line up: every value starts where its header starts.
    assert lines[1].index("Progressing") == lines[0].index("PHASE")


def test_list_marks_a_paused_canary_in_the_phase_column() -> None:
    paused = canary(phase="Progressing", canaryWeight=10, paused=True)
    row = render.list_table([paused], all_namespaces=False, wide=False, now=NOW).splitlines()[1]
    assert row.split()[1] == "Progressing,Paused"


def test_list_wide_adds_step_target_routes_and_namespace_only_with_all() -> None:
    text = render.list_table([RUNNING], all_namespaces=False, wide=True, now=NOW)
    header, row = text.splitlines()
    assert header.split() == [
        "NAME", "PHASE", "WEIGHT", "FAILED", "READY", "REASON", "SINCE", "AGE", "REVISION", "STEP", "TARGET",
        "ROUTES",
    ]
    assert row.split()[-4:] == ["7d9f8c6b5", "2/4", "payments-api", "HTTPRoute/payments-api,GRPCRoute/rpc"]


def test_list_shows_a_stuck_canary_as_not_ready_with_the_reason_since_its_transition() -> None:
    stuck = canary(phase="Initialized", canaryWeight=0, conditions=[
        {"type": "Ready", "status": "False", "reason": "TargetNotFound", "message": "Deployment missing",
         "lastTransitionTime": iso(125)},
        {"type": "Progressing", "status": "False", "reason": "Initializing", "message": "...",
         "lastTransitionTime": iso(5)},
    ])
    row = render.list_table([stuck], all_namespaces=False, wide=False, now=NOW).splitlines()[1]
    assert row.split()[1:] == ["Initialized", "0%", "0/5", "False", "TargetNotFound", "2m5s", "3h5m"]


def test_status_page_shows_step_weight_metrics_against_ranges_and_conditions() -> None:
    events = [
        {
            "type": "Warning",
            "reason": "AnalysisFailed",
            "message": "latency-p99 612 > 500",
            "time": iso(8),
            "count": 2,
        }
    ]
    page = render.status_page(RUNNING, events, now=NOW, marks=MARKS)
    assert "Phase:           Progressing" in page
    assert "Step:            2 of 4 (weights 5, 10, 25, 50)" in page
    assert "Weight:          10% [######------------------------] 10/50%" in page
    assert "Failed checks:   1/5" in page
    assert "Revision:        7d9f8c6b5 (last promoted: 5b6c4d3e2)" in page
    assert "Last step:       42s ago (interval 1m)" in page
    metric_lines = {line.split()[0]: line for line in page.splitlines() if line.startswith("  ")}
    assert "99.87" in metric_lines["success-rate"] and ">= 99" in metric_lines["success-rate"]
    assert "\u2713 pass" in metric_lines["success-rate"]
    assert "612" in metric_lines["latency-p99"] and "<= 500" in metric_lines["latency-p99"]
    assert "\u2717 FAIL" in metric_lines["latency-p99"] and "612 is above 500" in metric_lines["latency-p99"]
    assert "0.1..0.8" in metric_lines["saturation"] and "not checked yet" in metric_lines["saturation"]
    assert "primary ready" in metric_lines["Ready"]
    assert "(x2) latency-p99 612 > 500" in page


def test_marks_fall_back_to_ascii() -> None:
    page = render.status_page(RUNNING, [], now=NOW, marks=render.Marks.for_encoding("ascii"))
    page.encode("ascii")
    assert "x FAIL" in page and "+ pass" in page


def test_status_page_of_an_unreconciled_or_malformed_canary_still_prints() -> None:
    fresh = canary()
    fresh["spec"]["analysis"] = {"stepWeights": [50, 10]}  # invalid schedule: not ascending
    page = render.status_page(fresh, [], now=NOW, marks=MARKS)
    assert "(not yet reconciled)" in page
    assert "does not parse" in page
    assert "(none yet)" in page  # conditions


def test_pending_action_is_shown_until_acknowledged() -> None:
    pending = canary(
        phase="Progressing",
        requestedAction={"id": "b", "action": "pause", "requestedBy": "ann@h", "requestedAt": iso(5)},
        lastAction={"id": "a", "action": "resume", "result": "Resumed", "at": iso(600)},
    )
    assert render.pending_request(pending) == pending["status"]["requestedAction"]
    page = render.status_page(pending, [], now=NOW, marks=MARKS)
    assert "Pending action:  pause by ann@h 5s ago (id b), not yet acknowledged" in page
    assert "Last action:     resume -> Resumed 10m ago (id a)" in page
    done = canary(requestedAction={"id": "b", "action": "pause"}, lastAction={"id": "b", "action": "pause"})
    assert render.pending_request(done) is None


def test_a_phase_written_as_finalising_before_reads_and_counts_as_finalizing() -> None:
    old = canary(phase="Finalising", canaryWeight=0)
    assert render.phase(old) == "Finalizing"
    assert render.list_table([old], all_namespaces=False, wide=False, now=NOW).splitlines()[1].split()[1] == (
        "Finalizing"
    )
    assert wanted_state_holds("promote", old)
    assert not wanted_state_holds("abort", old), "a promotion under way is not a rolled-back run"
    assert render.phase(canary(phase="SomethingNew")) == "SomethingNew"


def test_human_durations_match_kubectl() -> None:
    assert [
        render.human_duration(s)
        for s in (5, 119, 130, 600, 3 * 3600 + 300, 9 * 3600, 3 * 86400 + 3600, 40 * 86400, 800 * 86400)
    ] == ["5s", "119s", "2m10s", "10m", "3h5m", "9h", "3d1h", "40d", "2y"]


def test_progress_bar_is_proportional_to_max_weight() -> None:
    assert render.progress_bar(25, 50, width=10) == "[#####-----] 25/50%"
    assert render.progress_bar(50, 50, width=10) == "[##########] 50/50%"
    assert render.progress_bar(0, 50, width=10) == "[----------] 0/50%"


def test_ignored_action_is_success_only_when_the_wanted_state_holds() -> None:
    ignored = {"id": "x", "action": "resume", "result": "ignored: not paused"}
    assert judge("resume", ignored, canary(phase="Progressing", paused=False)) == Outcome.DONE
    assert (
        judge(
            "promote",
            {**ignored, "result": "ignored: no run in progress (phase Failed)"},
            canary(phase="Failed"),
        )
        == Outcome.REFUSED
    )
    promoted = {"id": "x", "result": "PromotedManually"}
    assert judge("promote", promoted, canary(phase="Promoting")) == Outcome.DONE
    assert wanted_state_holds("abort", canary(phase="Failed"))
    assert not wanted_state_holds("abort", canary(phase="Progressing"))
    assert wanted_state_holds("resume", canary(phase="Progressing", paused=False))
    assert not wanted_state_holds("promote-step", canary(phase="Progressing"))


def test_status_page_explains_a_comparison_with_the_primary() -> None:
    compared = canary(
        phase="Progressing", canaryWeight=10, step=1,
        metrics=[{
            "name": "error-rate", "verdict": "Fail", "value": 2.1, "checkedAt": iso(5),
            "message": "canary 2.1% vs primary 1%: shift +110%",
            "comparison": {
                "judge": "Sequential", "classification": "High", "canary": 2.1, "primary": 1.0, "shift": 1.1,
                "shiftLower": 0.42, "shiftUpper": None, "confidence": 0.95, "score": 0.0, "critical": True,
            },
        }, {
            "name": "latency-p99", "verdict": "Inconclusive", "value": 210.0, "checkedAt": iso(5),
            "comparison": {"judge": "MannWhitney", "classification": "Inconclusive", "canary": 210.0,
                           "primary": 200.0, "shift": 0.05, "shiftLower": -0.1, "shiftUpper": 0.3},
        }],
    )  # fmt: skip
    compared["spec"]["analysis"]["metrics"] = [
        {"name": "error-rate", "templateRef": {"name": "error-rate"},
         "compare": {"judge": "Sequential", "tolerance": 0.25, "critical": True}},
        {"name": "latency-p99", "templateRef": {"name": "latency-p99"}, "compare": {"direction": "either"}},
    ]  # fmt: skip
    page = render.status_page(compared, [], now=NOW, marks=MARKS)
    lines = page.splitlines()
    assert any("error-rate" in line and "vs primary: increase <= +25% (Sequential)" in line for line in lines)
    assert any("latency-p99" in line and "vs primary: either <= ±25% (MannWhitney)" in line
               and "~ inconclusive" in line for line in lines)  # fmt: skip
    start = lines.index("Comparison with the primary: score 0 (pass 95, marginal 75)")
    table = lines[start + 1 : start + 4]
    assert table[0].split() == ["NAME", "JUDGE", "CANARY", "PRIMARY", "SHIFT", "INTERVAL", "FOUND"]
    assert table[1].split() == [
        "error-rate", "Sequential", "2.1", "1", "+110%", "+42%", "..", "-", "at", "95%", "High", "(critical)"
    ]  # fmt: skip
    assert table[2].split()[:8] == ["latency-p99", "MannWhitney", "210", "200", "+5%", "-10%", "..", "+30%"]


def deployment(name: str, image: str, replicas: int, ready: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "payments"},
        "spec": {"replicas": replicas,
                 "template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        "status": {"readyReplicas": ready},
    }  # fmt: skip


WORKLOADS = render.Workloads(
    primary=deployment("payments-api-primary", "registry.example/payments:1.4.2", 3, 3),
    canary=deployment("payments-api", "registry.example/payments:1.5.0", 3, 1),
)


def test_the_default_status_view_fits_80_by_24_with_the_essentials() -> None:
    events = [
        {"type": "Normal", "reason": f"StepAdvanced{i}", "time": iso(600 - i),
         "message": f"step {i}: " + "a long message that would not fit on one line " * 4}
        for i in range(30)
    ]  # fmt: skip
    page = render.status_summary(RUNNING, events, now=NOW, marks=MARKS, workloads=WORKLOADS)
    lines = page.splitlines()
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    assert "Phase:           Progressing" in lines
    assert "Step:            2 of 4 (weights 5, 10, 25, 50)" in lines
    assert "Weight:          10% [######------------------------] 10/50%" in lines
    # Both Deployments: readiness, image, revision.
    assert "Primary:         3/3 ready  registry.example/payments:1.4.2  (rev 5b6c4d3e2)" in lines
    assert "Canary:          1/3 ready  registry.example/payments:1.5.0  (rev 7d9f8c6b5)" in lines
    metric = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert "99.87" in metric["success-rate"] and ">= 99" in metric["success-rate"]
    assert "612" in metric["latency-p99"] and "<= 500" in metric["latency-p99"]
    assert "\u2717 FAIL" in metric["latency-p99"]
    assert "not checked yet" in metric["saturation"]
    # The newest Events, as many as fit; the rest under -o wide.
    shown = [line for line in lines if "StepAdvanced" in line]
    assert shown and "StepAdvanced29" in shown[-1]
    assert f"Events (last {len(shown)} of 30; all with -o wide):" in lines
    assert lines[-1].endswith("\u2026")


def test_a_stuck_canary_says_why_in_the_default_view_and_wide_adds_the_rest() -> None:
    stuck = canary(phase="Initialized", canaryWeight=0, conditions=[
        {"type": "Ready", "status": "False", "reason": "RouteMissingBackends",
         "message": "HTTPRoute payments/payments-api rule 0 must list payments-api-primary and "
                    "payments-api-canary once each as backendRefs; it lists payments-api-primary",
         "lastTransitionTime": iso(30)},
        {"type": "RoutesReady", "status": "False", "reason": "RouteMissingBackends",
         "message": "HTTPRoute payments-api rule 0 must list both", "lastTransitionTime": iso(30)},
    ])  # fmt: skip
    summary = render.status_summary(stuck, [], now=NOW, marks=MARKS, workloads=render.Workloads())
    # What to fix, whole, on up to three lines.
    assert (
        "Ready:           False (RouteMissingBackends): HTTPRoute payments/payments-api\n"
        "                 rule 0 must list payments-api-primary and payments-api-canary\n"
        "                 once each as backendRefs; it lists payments-api-primary\n"
    ) in summary
    assert max(len(line) for line in summary.splitlines()) <= 80
    assert "Primary:         Deployment payments-api-primary not found" in summary
    assert "Conditions:" not in summary and "Events: none" in summary
    wide = render.status_page(stuck, [], now=NOW, marks=MARKS, workloads=render.Workloads())
    assert "Conditions:" in wide and "RoutesReady" in wide and "Routes:" in wide


def test_a_narrow_terminal_cuts_lines_with_a_plain_mark_where_unicode_cannot_print() -> None:
    ascii_marks = render.Marks.for_encoding("ascii")
    page = render.status_summary(RUNNING, [], now=NOW, marks=ascii_marks, workloads=WORKLOADS, width=50,
                                 height=15)  # fmt: skip
    lines = page.splitlines()
    assert len(lines) <= 15 and max(len(line) for line in lines) <= 50
    assert any(line.endswith("...") for line in lines)
    page.encode("ascii")


def test_times_in_messages_read_as_in_12s_or_ago_not_rfc3339() -> None:
    ahead = (NOW + timedelta(seconds=12)).strftime("%Y-%m-%dT%H:%M:%S.123456+00:00")
    assert render.humanize(f"resumed: next analysis at {ahead}", NOW) == "resumed: next analysis in 12s"
    assert render.humanize(ahead, NOW) == "in 12s"
    assert render.humanize(f"the deadline passed at {iso(90)}", NOW) == "the deadline passed 90s ago"
    resumed = canary(phase="Progressing", canaryWeight=10, step=2, conditions=[
        {"type": "Progressing", "status": "True", "reason": "StepAdvanced",
         "message": f"step 2 of 4 at 10%; next analysis at {ahead}", "lastTransitionTime": iso(30)},
    ], lastAction={"id": "a", "action": "resume", "result": f"resumed: next analysis at {ahead}",
                   "at": iso(1)})  # fmt: skip
    page = render.status_page(resumed, [], now=NOW, marks=MARKS)
    assert "step 2 of 4 at 10%; next analysis in 12s" in page
    assert "resume -> resumed: next analysis in 12s" in page and "+00:00" not in page
def with_analysis(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    changed = {**base, "spec": {**base["spec"], "analysis": {**base["spec"]["analysis"], **fields}}}
    changed["spec"]["analysis"] = {k: v for k, v in changed["spec"]["analysis"].items() if v is not None}
    return changed


def test_status_page_shows_an_ab_run_its_matches_and_the_rule_canaryd_added() -> None:
    ab = with_analysis(
        canary(
            phase="Progressing", step=3, canaryWeight=0, revision="7d9f8c6b5",
            traffic={"mode": "ABTest", "routes": [
                {"kind": "HTTPRoute", "name": "payments-api", "addedRules": ["abtest-0.canaryd.io"]}]},
        ),
        stepWeights=None, iterations=10,
        match=[{"headers": [{"name": "x-canary", "value": "insider"}]},
               {"queryParams": [{"name": "beta", "type": "RegularExpression", "value": "^on$"}]}],
    )  # fmt: skip
    page = render.status_page(ab, [], now=NOW, marks=MARKS)
    assert "Step:            3 of 10 (A/B testing: 10 checks at weight 0)" in page
    assert "Mode:            A/B testing (to the canary: header x-canary=insider; or query beta~^on$)" in page
    assert "canaryd added:   HTTPRoute/payments-api: rule abtest-0.canaryd.io" in page
    assert render.step_of(ab) == "3/10"
    # The default view (80x24) says the mode too.
    summary = render.status_summary(ab, [], now=NOW, marks=MARKS)
    assert "Mode:            A/B testing" in summary
    assert len(summary.splitlines()) <= 24


def test_status_page_shows_mirroring_the_session_cookie_and_the_measured_share() -> None:
    mirrored = with_analysis(
        canary(phase="Progressing", step=1, traffic={"mode": "Mirror", "mirrorPercent": 25, "routes": [
            {"kind": "HTTPRoute", "name": "payments-api", "mirror": True}]}),
        iterations=2, mirror={"percent": 25},
    )  # fmt: skip
    page = render.status_page(mirrored, [], now=NOW, marks=MARKS)
    assert "Step:            1 of 6 (2 checks on mirrored requests, then weights 5, 10, 25, 50)" in page
    assert "Mode:            mirroring 25% of requests to the canary" in page
    assert "HTTPRoute/payments-api: a RequestMirror filter to the canary" in page

    sticky = with_analysis(
        canary(
            phase="Progressing", step=2, canaryWeight=10,
            traffic={"mode": "Canary", "sessionCookie": "canary=7d9f8c6b5", "routes": [
                {"kind": "HTTPRoute", "name": "payments-api", "addedRules": ["sticky-0.canaryd.io"],
                 "setsCookie": True}],
                "share": {"step": 2, "expected": 10, "measured": 3.5, "tolerance": 5, "verified": False}},
        ),
        sessionAffinity={"cookieName": "canary"},
        trafficShare={"templateRef": {"name": "traffic-share"}},
    )  # fmt: skip
    page = render.status_page(sticky, [], now=NOW, marks=MARKS)
    assert "Mode:            canary (weights)" in page
    assert (
        "canaryd added:   HTTPRoute/payments-api: rule sticky-0.canaryd.io, a Set-Cookie filter on the "
        "canary backendRef"
    ) in page
    assert "Session cookie:  canary=7d9f8c6b5" in page
    assert "Traffic share:   3.5% measured at step 2, expected 10% ± 5 (not carried yet)" in page
    # A plain canary's page has no traffic lines.
    assert "Mode:" not in render.status_page(RUNNING, [], now=NOW, marks=MARKS)
