"""The hostile-input corpus: objects and Prometheus answers a careless or hostile world gives canaryd.

Hypothesis generates, from a valid Canary, MetricTemplate, HTTPRoute and
Deployment, versions with fields replaced by wrong types, huge and negative
numbers, NaN and Inf, long and odd strings, missing and unknown fields, and
Prometheus answers that are wrong in every way an HTTP server can be (wrong
types, huge series counts, strings for numbers, NaN/Inf, errors, HTML, slow,
truncated or empty bodies). Each input goes through the real reconcile path:
a sandbox API server (whose Canary and MetricTemplate CRDs keep no schema, as
when the installed CRDs are older or newer than the controller, so that what
a current API server would refuse reaches the controller too), a running
controller, and a small HTTP server answering its queries.

Each Canary of a batch must end with a condition a person can act on (no
hang), never with ``Reconciled=False`` for an exception canaryd did not
expect (a crash caught by the last-resort handler), and its deletion must
finish. Objects the API server refuses (routes and Deployments keep their
schemas) are counted as refused by the API server: that answer goes to the
person who applied them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import Phase as HypothesisPhase
from hypothesis import strategies as st

from canaryd.runtime.controller import running_controller
from canaryd.runtime.settings import Settings
from canaryd.sandbox.cluster import SandboxCluster
from tests.runtime import world

CANARIES = "canaries.canaryd.io"
TEMPLATES = "metrictemplates.canaryd.io"
HTTPROUTES = "httproutes.gateway.networking.k8s.io"
#: The conditions a Canary can carry that tell a person where it stands.
SAYING_CONDITIONS = ("Ready", "Reconciled")
_CASE = re.compile(r'hostile_case="(\d+)"')


# -- what the generator starts from --------------------------------------------


def valid_bundle(name: str, namespace: str) -> dict[str, Any]:
    """A Canary with both kinds of metric, its template, route and Deployment, all valid."""
    canary = world.canary(namespace, name, interval="1s", threshold=2)
    canary["spec"]["analysis"]["metrics"] = [
        {"name": "inline", "query": 'sum(x{hostile_case="{case}"})', "thresholdRange": {"min": 0}},
        {"name": "templated", "templateRef": {"name": name}, "thresholdRange": {"max": 500}},
    ]
    template = {
        "apiVersion": "canaryd.io/v1alpha1",
        "kind": "MetricTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"query": 'histogram_quantile(0.99, x{hostile_case="{case}", s="{{ service }}"})'},
    }
    return {
        "canary": canary,
        "template": template,
        "route": world.route(namespace, name),
        "deployment": world.deployment(namespace, name),
    }


# -- hostile values and edits -------------------------------------------------------

_ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "NaN",
        "+Inf",
        "-Inf",
        "1e400",
        "-1",
        "0",
        "-1s",
        "0s",
        "999999999999h",
        "1.5.5s",
        "9" * 40,
        "{{ service }}",
        "{{",
        "}}",
        "{{ nope }}",
        "${HOME}",
        "'; DROP",
        "\x00",
        "\u202e",
        "é" * 70,
        "a" * 300,
        "web-primary",
        "web.v2",
        "UPPER",
        "-leading",
        "trailing-",
        "a/b",
        "..",
        "http://x:y@h/?token=t",
    ]
)
HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**31 - 1, 2**53 + 1, 2**62, 2**63, 2**64, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    _ODD_STRINGS,
    st.text(max_size=40),
    st.lists(st.integers(-5, 200), max_size=12),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value (dict keys and list indexes), the value's own first."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value


def _delete(document: Any, path: tuple[Any, ...]) -> None:
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any], under: str, edits: int = 4) -> dict[str, Any]:
    """``document`` with up to ``edits`` values under ``under`` replaced, deleted or added."""
    result = copy.deepcopy(document)
    for _ in range(draw(st.integers(0, edits))):
        candidates = [p for p in paths(result) if p and p[0] == under]
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            _set(result, path, draw(HOSTILE_VALUES))
        elif action == "delete" and len(path) > 1:
            _delete(result, path)
        else:
            target = result
            for step in path:
                target = target[step]
            if isinstance(target, dict):
                target[draw(st.sampled_from(["extra", "weight", "port", "name", "0"]))] = draw(HOSTILE_VALUES)
            elif isinstance(target, list):
                target.append(
                    copy.deepcopy(target[0]) if target and draw(st.booleans()) else draw(HOSTILE_VALUES)
                )
    return result


# -- Prometheus answers --------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the stand-in Prometheus answers a query with."""

    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    content_type: str = "application/json"


def _vector(values: list[Any], result_type: str = "vector") -> bytes:
    result = [{"metric": {"i": str(i)}, "value": [1700000000, v]} for i, v in enumerate(values)]
    return json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}}).encode()


_SAMPLE = st.one_of(
    st.sampled_from(["1", "NaN", "+Inf", "-Inf", "1e308", "1e400", "-0", "abc", "", "0x10"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**70), 2**70),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    kind = draw(
        st.sampled_from(
            ["vector", "many", "shape", "error", "http", "truncated", "garbage", "slow", "matrix", "scalar"]
        )
    )
    if kind == "vector":
        return Answer(body=_vector(draw(st.lists(_SAMPLE, max_size=3))))
    if kind == "many":
        return Answer(body=_vector(["1"] * draw(st.integers(1000, 20000))))
    if kind == "matrix":
        return Answer(body=_vector([draw(_SAMPLE)], result_type="matrix"))
    if kind == "scalar":
        value = [1700000000, draw(_SAMPLE)]
        data = {
            "status": "success",
            "data": {"resultType": draw(st.sampled_from(["scalar", "string"])), "result": value},
        }
        return Answer(body=json.dumps(data).encode())
    if kind == "shape":
        shape = draw(
            st.sampled_from(
                [
                    None,
                    [],
                    1,
                    "x",
                    {},
                    {"status": "success"},
                    {"status": "success", "data": None},
                    {"status": "success", "data": {"resultType": "vector", "result": None}},
                    {"status": "success", "data": {"resultType": "vector", "result": [{"value": None}]}},
                    {
                        "status": "success",
                        "data": {"resultType": "vector", "result": [{"metric": 1, "value": [1]}]},
                    },
                    {"status": "success", "data": {"resultType": "vector", "result": ["x"]}},
                ]
            )
        )
        return Answer(body=json.dumps(shape).encode())
    if kind == "error":
        error_type = draw(st.sampled_from(["bad_data", "timeout", "internal", ""]))
        body = {"status": "error", "errorType": error_type, "error": draw(st.text(max_size=300))}
        return Answer(status=draw(st.sampled_from([200, 400, 422, 503])), body=json.dumps(body).encode())
    if kind == "http":
        status = draw(st.sampled_from([301, 401, 403, 404, 429, 500, 502, 503, 504]))
        return Answer(status=status, body=b"<html>nope</html>", content_type="text/html")
    if kind == "truncated":
        full = _vector([draw(_SAMPLE)])
        return Answer(body=full[: draw(st.integers(0, len(full) - 1))])
    if kind == "garbage":
        return Answer(
            body=draw(st.binary(max_size=200)),
            content_type=draw(st.sampled_from(["text/plain", "application/json"])),
        )
    return Answer(body=_vector(["1"]), delay=draw(st.floats(0.5, 3.0)))


class HostilePrometheus:
    """An HTTP server that answers each query with the answer of the case its PromQL names."""

    def __init__(self) -> None:
        self.answers: dict[int, Answer] = {}
        self.queries = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = dict(request.query)
        if request.method == "POST":
            form.update({k: str(v) for k, v in (await request.post()).items()})
        self.queries += 1
        found = _CASE.search(form.get("query", ""))
        answer = self.answers.get(int(found.group(1)) if found else -1, Answer(body=_vector(["1"])))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(status=answer.status, body=answer.body, content_type=answer.content_type)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/v1/{what}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- one case, and the generator --------------------------------------------------------


@dataclass
class Case:
    """One hostile input: the objects to apply (None: not applied) and the Prometheus answer."""

    number: int
    objects: dict[str, dict[str, Any] | None]
    answer: Answer


def _with_case(value: Any, number: int) -> Any:
    if isinstance(value, str):
        return value.replace("{case}", str(number))
    if isinstance(value, dict):
        return {k: _with_case(v, number) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_case(v, number) for v in value]
    return value


@st.composite
def cases(draw: st.DrawFn, number: int, namespace: str) -> Case:
    name = draw(st.sampled_from(["web"] * 6 + ["api", "a" * 56, "web-primary", "Bad_Name", "x"]))
    base = _with_case(valid_bundle(f"{name}" if name != "Bad_Name" else "bad", namespace), number)
    if name == "Bad_Name":  # the target names a Deployment that cannot exist
        base["canary"]["spec"]["targetRef"]["name"] = name
    # Which objects are hostile (the rest stay valid, so that the hostile one is what is tested).
    hostile: set[str] = set()
    if draw(st.integers(0, 9)) >= 4:  # else all valid: the Prometheus answer is what is tested
        hostile = draw(
            st.sets(st.sampled_from(["canary", "template", "route", "deployment"]), min_size=1, max_size=2)
        )
    objects: dict[str, dict[str, Any] | None] = {}
    for kind, document in base.items():
        if kind in hostile:
            document = draw(mutated(document, "spec", edits=4 if kind != "canary" else 6))
        if kind != "canary" and kind in hostile and draw(st.integers(0, 4)) == 0:
            document = None  # missing altogether
        objects[kind] = document
    return Case(number=number, objects=objects, answer=draw(answers()))


def generate(count: int, namespace_of: Any, run_seed: int = 16, first: int = 0) -> list[Case]:
    """``count`` cases numbered from ``first``, drawn by hypothesis from ``run_seed`` (no shrinking)."""
    drawn: list[Case] = []

    @seed(run_seed)
    @settings(
        max_examples=count,
        phases=[HypothesisPhase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        if len(drawn) < count:
            number = first + len(drawn)
            drawn.append(data.draw(cases(number, namespace_of(number))))

    collect()
    if len(drawn) < count:  # hypothesis stops early when it sees few distinct inputs
        drawn.extend(generate(count - len(drawn), namespace_of, run_seed + 1, first + len(drawn)))
    return drawn


# -- running a corpus --------------------------------------------------------------------


@dataclass
class Figures:
    """What a corpus run saw."""

    inputs: int = 0
    applied: dict[str, int] = field(default_factory=Counter)
    refused_by_api_server: dict[str, int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    unclear: list[str] = field(default_factory=list)
    prometheus_queries: int = 0
    seconds: float = 0.0
    #: The longest a batch took to be deleted, in seconds.
    longest_deletion: float = 0.0

    @property
    def problems(self) -> list[str]:
        return [*self.crashes, *self.hangs, *self.unclear]

    def table(self) -> str:
        lines = [
            f"inputs {self.inputs}  in {self.seconds:.0f}s  "
            f"Prometheus queries answered {self.prometheus_queries}"
        ]
        for kind in ("canary", "template", "route", "deployment"):
            lines.append(
                f"  {kind:<11} applied {self.applied.get(kind, 0):>6}   refused by the API server "
                f"{self.refused_by_api_server.get(kind, 0):>6}"
            )
        outcomes = ", ".join(f"{reason} {n}" for reason, n in self.outcomes.most_common())
        lines.append(f"  Canary outcomes (phase/condition reason): {outcomes}")
        lines.append(f"  longest deletion of a batch {self.longest_deletion:.1f}s")
        lines.append(
            f"  crashes {len(self.crashes)}  hangs {len(self.hangs)}  unclear refusals {len(self.unclear)}"
        )
        return "\n".join(lines)


def schemaless(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD with its schema and CEL rules reduced to "any object" (an older or newer CRD)."""
    result = copy.deepcopy(crd)
    for version in result["spec"]["versions"]:
        version["schema"] = {
            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        }
    return result


def install_schemaless_crds(store: Any) -> None:
    import yaml

    for path in sorted((world.REPO / "manifests" / "crd").glob("*.canaryd.io.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                store.create("customresourcedefinitions", schemaless(doc))


def _reason_of(obj: dict[str, Any]) -> tuple[str, str, str]:
    """The Canary's Ready (else Reconciled) condition: (status, reason, message), or empty strings."""
    conditions = _dig(obj, "status", "conditions")
    if not isinstance(conditions, list):
        return "", "", ""
    by_type = {c.get("type"): c for c in conditions if isinstance(c, dict)}
    reconciled = by_type.get("Reconciled") or {}
    if reconciled.get("status") == "False":
        return "False", str(reconciled.get("reason", "")), str(reconciled.get("message", ""))
    ready = by_type.get("Ready") or {}
    return str(ready.get("status", "")), str(ready.get("reason", "")), str(ready.get("message", ""))


#: Reasons of a Canary on its way: not yet where it will stay.
_UNDERWAY = frozenset({"Initializing", "PrimaryNotReady", "CanaryNotReady", ""})


def _settled(obj: dict[str, Any] | None) -> bool:
    """The Canary says where it stands and is not merely on its way there."""
    if obj is None:
        return False
    status, reason, _ = _reason_of(obj)
    phase = _dig(obj, "status", "phase")
    if not reason:
        return False
    return phase in ("Initialized", "Progressing", "Succeeded", "Failed") or (
        status == "False" and reason not in _UNDERWAY
    )


def _says_something(obj: dict[str, Any] | None) -> bool:
    return obj is not None and bool(_reason_of(obj)[1])


@asynccontextmanager
async def hostile_world() -> Any:
    """A sandbox with schemaless canaryd CRDs, the stand-in Prometheus, and a running controller."""
    prometheus = HostilePrometheus()
    await prometheus.start()
    try:
        async with SandboxCluster(ready_delay=0.05, tick_interval=0.5, seed=16) as cluster:
            install_schemaless_crds(cluster.store)
            world.install_gateway(cluster.store)
            settings = Settings(
                kubeconfig=str(cluster.kubeconfig_path),
                health_address="127.0.0.1:0",
                metrics_address="127.0.0.1:0",
                prometheus_url=prometheus.url,
                qps=1000,
                burst=2000,
            )
            async with running_controller(settings) as controller:
                yield cluster, prometheus, controller
    finally:
        await prometheus.stop()


_APPLY_ORDER = (
    ("deployment", "deployments"),
    ("route", HTTPROUTES),
    ("template", TEMPLATES),
    ("canary", CANARIES),
)


async def run_batch(cluster: Any, prometheus: HostilePrometheus, batch: list[Case], figures: Figures,
                    settle_seconds: float = 40.0) -> None:  # fmt: skip
    """Apply a batch (one namespace per case), roll a new revision, judge every Canary, delete them."""
    store = cluster.store
    canaries: dict[int, tuple[str, str]] = {}
    for case in batch:
        figures.inputs += 1
        prometheus.answers[case.number] = case.answer
        namespace = f"hostile-{case.number}"
        store.ensure_namespace(namespace)
        for kind, resource in _APPLY_ORDER:
            document = case.objects.get(kind)
            if document is None:
                continue
            try:
                created = store.create(resource, document, namespace)
            except Exception as refusal:  # the API server's answer goes to whoever applied it
                if not str(refusal).strip():
                    figures.unclear.append(f"case {case.number}: {kind} refused without a message")
                figures.refused_by_api_server[kind] += 1
                continue
            figures.applied[kind] += 1
            if kind == "canary":
                canaries[case.number] = (namespace, created["metadata"]["name"])
    await _wait(store, canaries, settle_seconds / 2)
    revised: set[tuple[str, str]] = set()  # ready for a run: it must start one
    for namespace, name in canaries.values():  # a new revision, so that the analysis runs
        obj = world.find(store, CANARIES, namespace, name)
        deployment = _dig(obj, "spec", "targetRef", "name")
        ready = _reason_of(obj or {})[:2] == ("True", "Initialized")
        if (
            isinstance(deployment, str)
            and world.find(store, "deployments", namespace, deployment) is not None
        ):
            with _quiet():
                world.new_revision(store, namespace, deployment, "app:2")
                if ready:
                    revised.add((namespace, name))
    await _wait(store, canaries, settle_seconds / 2, minimum=6.0, revised=revised)
    for number, (namespace, name) in canaries.items():
        obj = world.find(store, CANARIES, namespace, name)
        status, reason, message = _reason_of(obj or {})
        label = f"case {number} ({namespace}/{name})"
        if not _says_something(obj):
            figures.hangs.append(
                f"{label}: no condition that says where it stands: {(obj or {}).get('status')}"
            )
            continue
        if reason == "ReconcileError" and "canaryd failed:" in message:
            figures.crashes.append(f"{label}: {message}")
        elif status == "False" and len(message) < 10:
            figures.unclear.append(f"{label}: {reason} with message {message!r}")
        figures.outcomes[f"{_dig(obj, 'status', 'phase') or 'no phase'}/{reason}"] += 1
    for namespace, name in canaries.values():
        with _quiet():
            store.delete(CANARIES, name, namespace)
    deleted_at = time.monotonic()
    deadline = deleted_at + settle_seconds * 3
    while time.monotonic() < deadline:
        if all(world.find(store, CANARIES, ns, n) is None for ns, n in canaries.values()):
            break
        await asyncio.sleep(0.2)
    figures.longest_deletion = max(figures.longest_deletion, time.monotonic() - deleted_at)
    for number, (namespace, name) in canaries.items():
        left = world.find(store, CANARIES, namespace, name)
        if left is not None:
            figures.hangs.append(f"case {number}: deletion did not finish: {left.get('status')}")
    for case in batch:  # keep the store small: the next batch starts from nothing
        for kind, resource in _APPLY_ORDER[:3]:
            document = case.objects.get(kind)
            name = _dig(document, "metadata", "name")
            if isinstance(name, str):
                with _quiet():
                    store.delete(resource, name, f"hostile-{case.number}")


def _dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None where a level is not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


class _quiet:
    """Ignore the API server refusing a follow-up write (the object was hostile to begin with)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], Exception)


async def _wait(
    store: Any,
    canaries: dict[int, tuple[str, str]],
    seconds: float,
    minimum: float = 0.0,
    revised: set[tuple[str, str]] | None = None,
) -> None:
    """Until every Canary is settled (one given a new revision: judged or ended), or ``seconds``."""

    def settled(namespace: str, name: str) -> bool:
        obj = world.find(store, CANARIES, namespace, name)
        if not _settled(obj):
            return False
        if (namespace, name) not in (revised or set()):
            return True
        # A run judged at least once (its answer is what is tested), ended, or stopped with a reason.
        status, reason, _ = _reason_of(obj or {})
        return (
            bool(_dig(obj, "status", "metrics"))
            or _dig(obj, "status", "phase") in ("Succeeded", "Failed")
            or (status == "False" and reason not in _UNDERWAY)
        )

    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        if time.monotonic() - started >= minimum and all(settled(ns, n) for ns, n in canaries.values()):
            return
        await asyncio.sleep(0.2)


async def run_corpus(count: int, batch_size: int = 100, run_seed: int = 16) -> Figures:
    """Generate ``count`` cases and run them in batches; the figures say what happened."""
    figures = Figures()
    started = time.monotonic()
    every = generate(count, lambda n: f"hostile-{n}", run_seed)
    async with hostile_world() as (cluster, prometheus, _controller):
        for first in range(0, len(every), batch_size):
            await run_batch(cluster, prometheus, every[first : first + batch_size], figures)
        figures.prometheus_queries = prometheus.queries
    figures.seconds = time.monotonic() - started
    return figures


__all__ = ["Answer", "Case", "Figures", "HostilePrometheus", "generate", "run_corpus"]
