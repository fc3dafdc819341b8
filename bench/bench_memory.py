"""Resident memory the controller holds per Canary, with objects shaped as a real API server sends them.

canaryd keeps every object a decision needs in its list+watch caches, plus
what it derives per Canary (parsed models by resourceVersion, the claim index,
the wake-up schedule, the per-Canary metric series, shared query answers). The
goal is under 500 MB for 10,000 Canaries on one replica. The sandbox strips
``managedFields`` and cannot carry 10,000 Canaries on a small host, so this
bench measures the real controller (``canaryd run``'s wiring, in a process of
its own) against a lean stand-in API that serves what a real one would:

- ``bench/memory_shapes.json`` holds one Canary that has progressed (status
  filled), its target and primary Deployments, its two Services, its
  HTTPRoute, the two shared MetricTemplates it names, the Gateway and the
  GatewayClass, each as kube-apiserver v1.35 returned it (managedFields and
  kubectl's last-applied annotation included). ``capture`` fetched them from
  the real control plane (``scripts/cluster up``, see cluster/README.md);
- ``serve`` (a process of its own, so its memory is not counted) clones the
  per-Canary objects N times, one namespace per copy with fresh uids and
  resourceVersions (names stay, so each copy's revision hash still matches
  its status), and answers LISTs (in pages when asked, as kube-apiserver
  does with ``limit`` and ``continue``), WATCHes with bookmarks (and the
  events of the writes it accepted), GETs, and PATCH/POST/PUT/DELETE; on
  another port it answers every Prometheus query with 100
  (bench/stub_prometheus.py);
- ``controller`` is ``canaryd run`` itself (informers, reconciler, scheduler,
  claims, metrics, Prometheus client), with the informer trimming on or off.

Every copy's last step is long past, so each Canary takes one step as soon as
the caches sync (analysis queries, the route patch, status patches, an Event);
the analysis interval is set to ``--interval`` (1h) so none takes a second
step while memory is read. Readings come from the controller's
/proc/<pid>/status: VmRSS after imports (before any connection), VmRSS once
every Canary was written and the API has been quiet for ``--quiet`` seconds,
and VmHWM (the peak, which includes the LIST bodies being parsed).

    python bench/bench_memory.py                                   # 1,000 and 10,000, trimmed and not
    python bench/bench_memory.py --canaries 1000 --trim on
    python bench/bench_memory.py capture --out bench/memory_shapes.json   # with KUBECONFIG on a cluster

How the shapes were made (``capture`` only reads): ``scripts/cluster up``;
``kubectl apply -f manifests/crd/``; ``kubectl create namespace canaryd-system``;
``kubectl apply -f analysis/sandbox.yaml``; ``kubectl apply -k
manifests/samples``; the Gateway, GatewayClass and route status written as a
Gateway implementation would (there is none on that cluster) with ``kubectl
patch --subresource=status --field-manager=sandbox-gateway``; ``canaryd run``
with bench/stub_prometheus.py as its Prometheus; ``kubectl set image
deployment/payments-api``; capture once the Canary is at its second step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from canaryd.adapters.informer import PAGE_SIZE  # noqa: E402
from canaryd.api.durations import parse_duration  # noqa: E402
from canaryd.api.timestamps import format_rfc3339, parse_rfc3339  # noqa: E402
from canaryd.sandbox.server.patching import merge_patch  # noqa: E402

SHAPES = REPO / "bench" / "memory_shapes.json"

#: The objects one Canary brings (cloned per copy), by the fixture's key.
PER_CANARY = ("canary", "target", "primary", "primary_service", "canary_service", "route")
#: Objects every Canary shares (held once).
SHARED = ("templates", "gateway", "gateway_class")

#: Where each kind lives on the API: (path prefix, plural).
PLURALS = {
    "Canary": ("/apis/canaryd.io/v1alpha1", "canaries"),
    "MetricTemplate": ("/apis/canaryd.io/v1alpha1", "metrictemplates"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "Gateway": ("/apis/gateway.networking.k8s.io/v1", "gateways"),
    "GatewayClass": ("/apis/gateway.networking.k8s.io/v1", "gatewayclasses"),
}

Obj = dict[str, Any]
Key = tuple[str, str]


# -- pure parts ------------------------------------------------------------------------------------


def clone_namespace(index: int) -> str:
    return f"team-{index:05d}"


def uids_of(objects: list[Obj]) -> list[str]:
    return [str(obj["metadata"]["uid"]) for obj in objects if (obj.get("metadata") or {}).get("uid")]


def clone(objects: list[Obj], index: int, first: int) -> list[Obj]:
    """Copy ``index`` of one Canary's objects: own namespace, fresh uids, resourceVersions from ``first``.

    Every mention of an original uid (ownerReferences, the Canary's record of
    its route) is replaced by the copy's, and the namespace by the copy's
    wherever it appears as one (metadata, and kubectl's last-applied copy), so
    the copies are as large as the original and reference each other only.
    """
    namespace = clone_namespace(index)
    original_namespace = str(objects[0]["metadata"]["namespace"])
    text = json.dumps(objects)
    for uid in uids_of(objects):
        text = text.replace(uid, str(uuid.uuid5(uuid.NAMESPACE_OID, f"{uid}/{index}")))
    for quoted in (f'"namespace": "{original_namespace}"', f'\\"namespace\\":\\"{original_namespace}\\"'):
        text = text.replace(quoted, quoted.replace(original_namespace, namespace))
    copies: list[Obj] = json.loads(text)
    for offset, obj in enumerate(copies):
        obj["metadata"]["namespace"] = namespace
        obj["metadata"]["resourceVersion"] = str(first + offset)
    return copies


#: Status times a due step is measured from (and its progress deadline), moved back together by ``due_now``.
STATUS_TIMES = ("lastStepTime", "lastProgressTime", "runStartedAt")


def due_now(canary: Obj, interval: str, now: datetime) -> Obj:
    """The Canary with analysis interval ``interval``, its last step one interval and a minute before ``now``.

    Every time in its status moves back by the same amount, so it is due at
    once, takes one step, and is not due again for an interval; its progress
    deadline (counted from one interval after the last progress) stays ahead.
    """
    changed = copy.deepcopy(canary)
    changed["spec"]["analysis"]["interval"] = interval
    status = changed.get("status") or {}
    times = [parse_rfc3339(str(status[name])) for name in STATUS_TIMES if status.get(name)]
    times += [parse_rfc3339(str(m["checkedAt"])) for m in status.get("metrics") or [] if m.get("checkedAt")]
    known = [t for t in times if t is not None]
    if not known:
        return changed
    shift = now - parse_duration(interval) - timedelta(minutes=1) - max(known)

    def moved(text: Any) -> Any:
        parsed = parse_rfc3339(str(text)) if text else None
        return format_rfc3339(parsed + shift) if parsed is not None else text

    for name in STATUS_TIMES:
        if name in status:
            status[name] = moved(status[name])
    for entry in [*(status.get("metrics") or []), *(status.get("conditions") or [])]:
        for name in ("checkedAt", "lastTransitionTime"):
            if name in entry:
                entry[name] = moved(entry[name])
    return changed


@dataclass(frozen=True)
class ApiPath:
    """One request path of the Kubernetes API, taken apart."""

    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_api_path(path: str) -> ApiPath | None:
    """``/api/v1/namespaces/ns/services/x`` and the like; None for anything else (discovery)."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        rest = parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        rest = parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    return ApiPath(
        plural=rest[0],
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource=rest[2] if len(rest) > 2 else None,
    )


def proc_status_kib(text: str) -> dict[str, int]:
    """The ``Vm*`` sizes of /proc/<pid>/status, in KiB."""
    sizes: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields = value.split()
        if name.startswith("Vm") and len(fields) == 2 and fields[1] == "kB" and fields[0].isdigit():
            sizes[name] = int(fields[0])
    return sizes


@dataclass(frozen=True)
class Reading:
    size: int
    trim: bool
    start_kib: int
    loaded_kib: int
    peak_kib: int
    seconds: float
    requests: dict[str, int]
    #: Canaries by phase and step when memory was read.
    canaries: dict[str, int]

    @property
    def per_canary_kib(self) -> float:
        return (self.loaded_kib - self.start_kib) / self.size


def table(readings: list[Reading]) -> str:
    """The readings, one line each, and trimmed/untrimmed ratios where both were measured."""
    lines = [
        f"{'canaries':>9} {'trim':>5} {'start MiB':>10} {'loaded MiB':>11} {'peak MiB':>9} "
        f"{'KiB/Canary':>11} {'seconds':>8}"
    ]
    for r in readings:
        lines.append(
            f"{r.size:>9,} {'on' if r.trim else 'off':>5} {r.start_kib / 1024:>10.1f} "
            f"{r.loaded_kib / 1024:>11.1f} {r.peak_kib / 1024:>9.1f} {r.per_canary_kib:>11.1f} "
            f"{r.seconds:>8.0f}"
        )
    by_size: dict[int, dict[bool, Reading]] = {}
    for r in readings:
        by_size.setdefault(r.size, {})[r.trim] = r
    for size, pair in sorted(by_size.items()):
        if True in pair and False in pair:
            on, off = pair[True], pair[False]
            lines.append(
                f"{size:,} Canaries, trimmed/untrimmed: loaded {on.loaded_kib / off.loaded_kib:.2f}, "
                f"per Canary {on.per_canary_kib / off.per_canary_kib:.2f}"
            )
    return "\n".join(lines)


def marginal_lines(readings: list[Reading]) -> list[str]:
    """Per Canary between the smallest and the largest run of each mode (what one more Canary costs)."""
    lines = []
    for trim in (True, False):
        runs = sorted((r for r in readings if r.trim == trim), key=lambda r: r.size)
        if len(runs) >= 2 and runs[-1].size > runs[0].size:
            small, large = runs[0], runs[-1]
            kib = (large.loaded_kib - small.loaded_kib) / (large.size - small.size)
            lines.append(
                f"trim {'on' if trim else 'off'}: {kib:.1f} KiB per Canary from "
                f"{small.size:,} to {large.size:,}"
            )
    return lines


# -- the stand-in API ------------------------------------------------------------------------------


class StandInApi:
    """Objects by plural and key, a global resourceVersion, and the watchers of each plural."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[Key, Obj]] = {plural: {} for _, plural in PLURALS.values()}
        self.version = 1
        self.watchers: dict[str, list[asyncio.Queue[bytes]]] = {}
        self.requests: Counter[str] = Counter()
        self.written_canaries: set[Key] = set()
        self.last_write = time.monotonic()

    def load(self, shapes: dict[str, Any], canaries: int, interval: str) -> None:
        per_canary = [shapes[key] for key in PER_CANARY]
        per_canary[0] = due_now(per_canary[0], interval, datetime.now(UTC))
        for index in range(canaries):
            for obj in clone(per_canary, index, self.version):
                self.put(obj)
            self.version += len(per_canary)
        for shared in [*shapes["templates"], shapes["gateway"], shapes["gateway_class"]]:
            self.put(copy.deepcopy(shared))

    def put(self, obj: Obj) -> None:
        meta = obj["metadata"]
        plural = PLURALS[obj["kind"]][1]
        self.objects[plural][(str(meta.get("namespace", "")), str(meta["name"]))] = obj

    def bump(self, obj: Obj) -> Obj:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return obj

    def notify(self, plural: str, event_type: str, obj: Obj) -> None:
        line = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
        for queue in self.watchers.get(plural, []):
            queue.put_nowait(line)

    def write(self, path: ApiPath, method: str, content_type: str, body: Any) -> tuple[int, Obj]:
        bucket = self.objects.setdefault(path.plural, {})
        key = (path.namespace or "", path.name or "")
        self.last_write = time.monotonic()
        if method == "POST":
            created = dict(body)
            meta = created.setdefault("metadata", {})
            meta.setdefault("namespace", path.namespace or "")
            if not meta.get("name"):
                meta["name"] = f"{meta.get('generateName', 'x-')}{self.version:x}"
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.bump(created)
            if path.plural != "events":
                bucket[(meta["namespace"], meta["name"])] = created
                self.notify(path.plural, "ADDED", created)
            return 201, created
        current = bucket.get(key)
        if current is None:
            return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
        if method == "DELETE":
            del bucket[key]
            self.notify(path.plural, "DELETED", current)
            return 200, current
        if method == "PUT":
            changed = dict(body)
        elif "json-patch" in content_type:
            import jsonpatch

            try:
                changed = jsonpatch.apply_patch(current, body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                status = {"kind": "Status", "status": "Failure", "reason": "Conflict", "code": 409}
                return 409, {**status, "message": str(exc)}
        elif "merge-patch" in content_type:
            changed = merge_patch(current, body)
        else:
            return 415, {"kind": "Status", "status": "Failure", "reason": "UnsupportedMediaType", "code": 415}
        if path.subresource == "status":
            changed = {**current, "status": changed.get("status")}
        elif "status" in current:
            changed = {**changed, "status": current["status"]}
        if changed.get("spec") != current.get("spec") and "generation" in current["metadata"]:
            generation = int(current["metadata"]["generation"]) + 1
            changed["metadata"] = {**changed["metadata"], "generation": generation}
            if path.plural == "deployments":  # a Deployment controller that catches up at once
                changed["status"] = {**(changed.get("status") or {}), "observedGeneration": generation}
        self.bump(changed)
        bucket[key] = changed
        if path.plural == "canaries":
            self.written_canaries.add(key)
        self.notify(path.plural, "MODIFIED", changed)
        return 200, changed


def stand_in_app(api: StandInApi, bookmark_seconds: float = 10.0) -> Any:
    from aiohttp import web
    from aiohttp.client_exceptions import ClientConnectionResetError

    kinds = {plural: kind for kind, (_, plural) in PLURALS.items()}

    async def handle(request: web.Request) -> web.StreamResponse:
        path = parse_api_path(request.path)
        if path is None:
            return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
        verb = request.method
        if verb == "GET" and path.name is None:
            verb = "WATCH" if request.query.get("watch") == "true" else "LIST"
        api.requests[f"{verb} {path.plural}{'/' + path.subresource if path.subresource else ''}"] += 1
        if verb == "WATCH":
            return await watch(request, path)
        if verb == "LIST":
            bucket = api.objects.get(path.plural, {})
            items = [o for (ns, _), o in bucket.items() if path.namespace in (None, ns)]
            version, start = str(api.version), 0
            if request.query.get("continue"):
                version, _, offset = request.query["continue"].partition("/")
                start = int(offset)
            limit = int(request.query.get("limit") or 0) or len(items)
            metadata: dict[str, Any] = {"resourceVersion": version}
            if start + limit < len(items):
                metadata["continue"] = f"{version}/{start + limit}"
            body = {
                "kind": f"{kinds.get(path.plural, 'Object')}List",
                "apiVersion": "v1",
                "metadata": metadata,
                "items": items[start : start + limit],
            }
            return web.Response(body=json.dumps(body).encode(), content_type="application/json")
        if verb == "GET":
            obj = api.objects.get(path.plural, {}).get((path.namespace or "", path.name or ""))
            if obj is None:
                return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
            return web.json_response(obj)
        raw = await request.read()
        status, answer = api.write(path, verb, request.content_type, json.loads(raw) if raw else None)
        return web.Response(body=json.dumps(answer).encode(), status=status, content_type="application/json")

    async def watch(request: web.Request, path: ApiPath) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        api.watchers.setdefault(path.plural, []).append(queue)
        deadline = time.monotonic() + float(request.query.get("timeoutSeconds") or 300)
        try:
            while time.monotonic() < deadline:
                try:
                    line = await asyncio.wait_for(queue.get(), bookmark_seconds)
                except TimeoutError:
                    bookmark = {"type": "BOOKMARK", "object": {"kind": kinds.get(path.plural, ""),
                                "metadata": {"resourceVersion": str(api.version)}}}  # fmt: skip
                    line = json.dumps(bookmark).encode() + b"\n"
                await response.write(line)
        except (ConnectionError, ClientConnectionResetError):
            pass  # the controller closed the stream (it stopped, or restarts its watch)
        finally:
            api.watchers[path.plural].remove(queue)
        return response

    async def stats(_request: web.Request) -> web.Response:
        phases = Counter(
            f"{(c.get('status') or {}).get('phase')} step {(c.get('status') or {}).get('step')}"
            for c in api.objects["canaries"].values()
        )
        return web.json_response(
            {
                "requests": dict(api.requests),
                "canaries": dict(phases),
                "written_canaries": len(api.written_canaries),
                "quiet_seconds": time.monotonic() - api.last_write,
            }
        )

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_get("/bench/stats", stats)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(shapes_file: Path, canaries: int, interval: str, port_file: Path) -> None:
    import stub_prometheus
    from aiohttp import web

    api = StandInApi()
    api.load(json.loads(shapes_file.read_text())["objects"], canaries, interval)
    ports = []
    runners = []
    for application in (stand_in_app(api), stub_prometheus.app()):
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        ports.append(runner.addresses[0][1])
    temporary = port_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(ports))
    temporary.rename(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


# -- the controller ---------------------------------------------------------------------------------


def run_controller(
    kubeconfig: str, prometheus_url: str, trim: bool, page_size: int, trace: Path | None = None
) -> int:
    """``canaryd run`` with the informers' trimming on or off and their LIST page size.

    It starts once a line arrives on stdin, so its RSS can be read first.

    With ``trace``, allocations are traced and SIGUSR1 writes the largest
    holders (by source line, then by file) to that file.
    """
    import functools

    from canaryd.adapters import informer
    from canaryd.runtime import controller
    from canaryd.runtime.log_setup import configure_logging
    from canaryd.runtime.settings import Settings

    # The controller builds its informers by this name; the bench's choice of options goes in with it.
    vars(controller)["MultiInformer"] = functools.partial(
        informer.MultiInformer, trim=trim, page_size=page_size
    )
    settings = Settings(
        kubeconfig=kubeconfig,
        prometheus_url=prometheus_url,
        leader_elect=False,
        health_address="0",
        metrics_address="0",
        log_level="warning",
        qps=5000,
        burst=10000,
    )
    configure_logging("json", "warning")
    if trace is not None:
        import tracemalloc

        tracemalloc.start(8)

        def dump(_signum: int, _frame: Any) -> None:
            snapshot = tracemalloc.take_snapshot()
            lines = []
            for kind in ("lineno", "filename"):
                stats = snapshot.statistics(kind)
                lines.append(f"by {kind}: {sum(s.size for s in stats) / 1024**2:.1f} MiB traced")
                lines += [f"{s.size / 1024**2:8.1f} MiB {s.count:>9} {s.traceback}" for s in stats[:40]]
            temporary = trace.with_suffix(".tmp")
            temporary.write_text("\n".join(lines) + "\n")
            temporary.rename(trace)

        signal.signal(signal.SIGUSR1, dump)
    print("imported", flush=True)
    sys.stdin.readline()
    return asyncio.run(controller.run_until_signalled(settings))


# -- measuring --------------------------------------------------------------------------------------


def kubeconfig_for(url: str, path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {"server": url}}],
        "users": [{"name": "bench", "user": {}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
        "current-context": "bench",
    }
    path.write_text(json.dumps(config))


def read_kib(pid: int) -> dict[str, int]:
    return proc_status_kib(Path(f"/proc/{pid}/status").read_text())


@contextlib.contextmanager
def process(args: list[str], **options: Any) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(args, text=True, **options)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def get_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


def measure(canaries: int, trim: bool, options: argparse.Namespace) -> Reading:
    nice = ["nice", "-n", str(options.nice)] if options.nice else []
    me = [sys.executable, str(Path(__file__).resolve())]
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        port_file = Path(scratch) / "ports"
        serve_args = ["serve", "--shapes", str(options.shapes), "--canaries", str(canaries)]
        with process(
            [*nice, *me, *serve_args, "--interval", options.interval, "--port-file", str(port_file)]
        ):
            while not port_file.exists():
                time.sleep(0.2)
            api_port, prometheus_port = json.loads(port_file.read_text())
            kubeconfig = Path(scratch) / "kubeconfig"
            kubeconfig_for(f"http://127.0.0.1:{api_port}", kubeconfig)
            stats_url = f"http://127.0.0.1:{api_port}/bench/stats"
            controller_args = ["controller", "--kubeconfig", str(kubeconfig)]
            controller_args += ["--prometheus-url", f"http://127.0.0.1:{prometheus_port}"]
            controller_args += [] if trim else ["--no-trim"]
            controller_args += ["--page-size", str(options.page_size)]
            controller_args += ["--trace", str(options.trace)] if options.trace is not None else []
            log = open(Path(scratch) / "controller.log", "w")  # noqa: SIM115
            with process(
                [*nice, *me, *controller_args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log
            ) as controller:
                assert controller.stdin is not None and controller.stdout is not None
                controller.stdout.readline()  # imported
                start = read_kib(controller.pid)["VmRSS"]
                began = time.monotonic()
                controller.stdin.write("go\n")
                controller.stdin.flush()
                while True:
                    time.sleep(1.0)
                    if controller.poll() is not None:
                        log.close()
                        raise SystemExit(
                            f"the controller exited ({controller.returncode}): "
                            + (Path(scratch) / "controller.log").read_text()[-2000:]
                        )
                    stats = get_json(stats_url)
                    done = stats["written_canaries"] >= canaries
                    if done and stats["quiet_seconds"] >= options.quiet:
                        break
                    if time.monotonic() - began > options.timeout:
                        raise SystemExit(f"only {stats['written_canaries']} of {canaries} Canaries written")
                sizes = read_kib(controller.pid)
                seconds = time.monotonic() - began - options.quiet
                if options.trace is not None:
                    controller.send_signal(signal.SIGUSR1)
                    while not options.trace.exists():
                        time.sleep(0.5)
                log.close()
                return Reading(
                    canaries, trim, start, sizes["VmRSS"], sizes["VmHWM"], seconds, stats["requests"],
                    stats["canaries"],
                )  # fmt: skip


# -- capturing --------------------------------------------------------------------------------------


async def capture(kubeconfig: str | None, namespace: str, name: str, out: Path) -> None:
    """Read one progressed Canary and what it names from a cluster, as the API server sends them."""
    from canaryd.adapters.kube import (
        CANARIES,
        DEPLOYMENTS,
        GATEWAY_CLASSES,
        GATEWAYS,
        HTTP_ROUTES,
        METRIC_TEMPLATES,
        SERVICES,
        KubeClient,
    )

    client = await KubeClient.connect(kubeconfig)
    try:
        canary = await client.get(CANARIES, namespace, name)
        if not (canary.get("status") or {}).get("step"):
            raise SystemExit(f"Canary {namespace}/{name} has not taken a step yet")
        target = canary["spec"]["targetRef"]["name"]
        route_ref = canary["spec"]["routeRefs"][0]
        route = await client.get(HTTP_ROUTES, route_ref.get("namespace", namespace), route_ref["name"])
        parent = route["spec"]["parentRefs"][0]
        gateway = await client.get(GATEWAYS, parent.get("namespace", namespace), parent["name"])
        templates = []
        for metric in canary["spec"]["analysis"]["metrics"]:
            ref = metric.get("templateRef")
            if ref:
                templates.append(
                    await client.get(METRIC_TEMPLATES, ref.get("namespace", namespace), ref["name"])
                )
        objects: dict[str, Any] = {
            "canary": canary,
            "target": await client.get(DEPLOYMENTS, namespace, target),
            "primary": await client.get(DEPLOYMENTS, namespace, f"{target}-primary"),
            "primary_service": await client.get(SERVICES, namespace, f"{target}-primary"),
            "canary_service": await client.get(SERVICES, namespace, f"{target}-canary"),
            "route": route,
            "templates": templates,
            "gateway": gateway,
            "gateway_class": await client.get(GATEWAY_CLASSES, "", gateway["spec"]["gatewayClassName"]),
        }
        version = await client.request("get", "GET", "/version")
    finally:
        await client.close()
    for obj, kind in ((objects["route"], "HTTPRoute"), (objects["gateway"], "Gateway")):
        obj.setdefault("kind", kind)
    source = f"kube-apiserver {version.get('gitVersion', '?')}, captured {time.strftime('%Y-%m-%d')}"
    out.write_text(json.dumps({"source": source, "objects": objects}, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size:,} bytes) from {source}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "mode", nargs="?", default="measure", choices=["measure", "serve", "controller", "capture"]
    )
    parser.add_argument("--canaries", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--trim", choices=["on", "off", "both"], default="both")
    parser.add_argument("--interval", default="1h", help="the Canaries' analysis interval (one step each)")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds without writes before reading")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds a run may take")
    parser.add_argument("--nice", type=int, default=19, help="niceness of the measured processes (0: none)")
    parser.add_argument("--shapes", type=Path, default=SHAPES)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--kubeconfig")
    parser.add_argument("--prometheus-url")
    parser.add_argument("--no-trim", action="store_true")
    parser.add_argument(
        "--page-size", type=int, default=PAGE_SIZE, help="objects per LIST page (0: one answer per LIST)"
    )
    parser.add_argument("--trace", type=Path, help="trace allocations; write the largest holders here")
    parser.add_argument("--namespace", default="payments")
    parser.add_argument("--name", default="payments-api")
    parser.add_argument("--out", type=Path, default=SHAPES)
    options = parser.parse_args()
    if options.mode == "serve":
        asyncio.run(serve(options.shapes, options.canaries[0], options.interval, options.port_file))
    elif options.mode == "controller":
        sys.exit(
            run_controller(
                options.kubeconfig,
                options.prometheus_url,
                not options.no_trim,
                options.page_size,
                options.trace,
            )
        )
    elif options.mode == "capture":
        kubeconfig = options.kubeconfig or os.environ.get("KUBECONFIG")
        asyncio.run(capture(kubeconfig, options.namespace, options.name, options.out))
    else:
        modes = {"on": [True], "off": [False], "both": [True, False]}[options.trim]
        readings = []
        for canaries in options.canaries:
            for trim in modes:
                reading = measure(canaries, trim, options)
                readings.append(reading)
                mode = "on" if trim else "off"
                print(
                    f"{canaries:,} Canaries, trim {mode}: RSS {reading.start_kib / 1024:.1f} -> "
                    f"{reading.loaded_kib / 1024:.1f} MiB (peak {reading.peak_kib / 1024:.1f}) in "
                    f"{reading.seconds:.0f} s; Canaries {reading.canaries}; "
                    f"requests {dict(sorted(reading.requests.items()))}",
                    flush=True,
                )
        print(f"LIST page size {options.page_size or 'unlimited'}")
        print(table(readings))
        for line in marginal_lines(readings):
            print(line)


if __name__ == "__main__":
    main()
