"""The sandbox's Kubernetes API server: the real REST protocol over loopback HTTP.

No cluster can run where canaryd is developed and tested, yet the controller
must be exercised through the same kubernetes_asyncio code paths it uses in
production, and people must be able to point kubectl at something. This
server speaks enough of kube-apiserver's protocol for both: discovery, CRUD,
the four patch types, subresources (status, scale), selectors, pagination,
watches with resumption, bookmarks and 410 Gone, Table output for
`kubectl get`, and Status bodies shaped like the real ones. It adds what a
real cluster cannot give tests: fault injection (`/sandbox/faults`), an audit
log (`/sandbox/audit`) and tokens with limited rights.

    server = SandboxApiServer()               # 127.0.0.1, free port
    await server.start()                      # server.url, server.port, server.store
    server.write_kubeconfig("kubeconfig")     # for kubectl and kubernetes_asyncio
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import ssl
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from canaryd.sandbox.server import discovery, errors, kinds, protobuf
from canaryd.sandbox.server.audit import AuditEntry, AuditLog
from canaryd.sandbox.server.errors import ApiError
from canaryd.sandbox.server.faults import FaultInjector
from canaryd.sandbox.server.kubeconfig import write_kubeconfig
from canaryd.sandbox.server.patching import APPLY_PATCH, PATCH_TYPES
from canaryd.sandbox.server.resources import ResourceType
from canaryd.sandbox.server.store import ObjectStore
from canaryd.sandbox.server.tables import render_table
from canaryd.sandbox.server.watch import BOOKMARK, ERROR

log = logging.getLogger(__name__)

READ_VERBS = frozenset({"get", "list", "watch"})
ADMIN = "sandbox-admin"


@dataclass
class User:
    """Who a bearer token stands for and what it may do.

    `allow` holds rules "VERB RESOURCE[/SUBRESOURCE]" with `*` wildcards, e.g.
    "get *", "patch canaries/status"; None means everything.
    """

    name: str
    allow: tuple[str, ...] | None = None

    def may(self, verb: str, resource: str, subresource: str | None) -> bool:
        if self.allow is None:
            return True
        target = f"{resource}/{subresource}" if subresource else resource
        for rule in self.allow:
            rule_verb, _, rule_resource = rule.partition(" ")
            if rule_verb not in ("*", verb):
                continue
            rule_resource = rule_resource.strip() or "*"
            if (
                rule_resource in ("*", target)
                or (rule_resource == "*/*")
                or (rule_resource.endswith("/*") and subresource and rule_resource[:-2] in (resource, "*"))
            ):
                return True
        return False


@dataclass
class _Target:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool = False


@dataclass
class _RequestInfo:
    verb: str = ""
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None
    patch_type: str | None = None
    user: str = ADMIN


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(obj: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(body=_dumps(obj), status=status, headers={"Content-Type": content_type})


def _error_response(error: ApiError) -> web.Response:
    response = _json(error.status(), error.code)
    if error.retry_after_seconds:
        response.headers["Retry-After"] = str(error.retry_after_seconds)
    return response


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _table_version(accept: str) -> str | None:
    for part in accept.split(","):
        params = {
            p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip() for p in part.split(";")[1:] if "=" in p
        }
        if params.get("as") == "Table" and params.get("g", "meta.k8s.io") == "meta.k8s.io":
            return params.get("v", "v1")
    return None


class SandboxApiServer:
    """An in-process Kubernetes API server on the loopback address.

    `port=0` picks a free port (read `port`/`url` after `start`). `tokens` maps
    bearer tokens to `User`s; unknown tokens are refused with 401 once any token
    is configured, and requests without a token act as the administrator.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        store: ObjectStore | None = None,
        history_limit: int = 10_000,
        bookmark_interval: float = 5.0,
        seed: int | None = None,
        require_namespaces: bool = True,
        audit_limit: int = 100_000,
        tls: bool = False,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the sandbox API server listens on the loopback address only")
        self.host = host
        self.requested_port = port
        self.store = store or ObjectStore(history_limit=history_limit, require_namespaces=require_namespaces)
        if seed is not None:
            self.store.reseed(seed)
        self.faults = FaultInjector(seed)
        self.audit = AuditLog(audit_limit)
        self.bookmark_interval = bookmark_interval
        self.users: dict[str, User] = {}
        self.port = 0
        self.tls = tls
        #: PEM of the self-signed certificate when `tls` (it is also the CA to trust).
        self.ca_pem: bytes | None = None
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._frames: OrderedDict[tuple[int, str], tuple[dict[str, Any], bytes]] = OrderedDict()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        ssl_context = await self._tls_context() if self.tls else None
        # A listen backlog like a real API server's (Go listens with the kernel's somaxconn): with
        # aiohttp's default of 128, a client opening its pool at once gets SYNs dropped and waits
        # seconds for the kernel to resend them.
        self._site = web.TCPSite(
            self._runner,
            self.host,
            self.requested_port,
            shutdown_timeout=0.5,
            ssl_context=ssl_context,
            backlog=4096,
        )
        await self._site.start()
        server = self._site._server  # the bound socket tells the real port when 0 was asked
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        return self.url

    async def stop(self) -> None:
        self.store.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    async def _tls_context(self) -> ssl.SSLContext:
        """A self-signed certificate for 127.0.0.1/localhost, made with the openssl command."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("tls=True needs the openssl command (apt-get install openssl)")
        self._tls_dir = tempfile.TemporaryDirectory(prefix="canaryd-sandbox-tls-")
        key = Path(self._tls_dir.name) / "key.pem"
        cert = Path(self._tls_dir.name) / "cert.pem"
        process = await asyncio.create_subprocess_exec(
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "7",
            "-subj",
            "/CN=canaryd-sandbox",
            "-addext",
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"openssl could not make a certificate: {stderr.decode().strip()}")
        self.ca_pem = cert.read_bytes()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    async def __aenter__(self) -> SandboxApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_kubeconfig(
        self,
        path: str | Path,
        *,
        token: str | None = None,
        namespace: str | None = None,
        impersonate: str | None = None,
    ) -> Path:
        """A kubeconfig for this server. kubectl sends `token` only over TLS; `impersonate` works on both."""
        return write_kubeconfig(
            path, self.url, token=token, namespace=namespace, ca_pem=self.ca_pem, impersonate=impersonate
        )

    # ------------------------------------------------------------------ users

    def add_user(self, token: str, name: str, allow: Iterable[str] | None = None) -> User:
        """Let `token` act as `name`, allowed the given rules (None: everything)."""
        user = User(name, tuple(allow) if allow is not None else None)
        self.users[token] = user
        return user

    def add_read_only_token(self, token: str, name: str = "viewer") -> User:
        return self.add_user(token, name, ["get *", "list *", "watch *"])

    def _authenticate(self, request: web.Request) -> User:
        header = request.headers.get("Authorization", "")
        user = User(ADMIN)
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
            known = self.users.get(token)
            if known is not None:
                user = known
            elif self.users:
                raise ApiError(401, "Unauthorized", "Unauthorized")
        impersonated = request.headers.get("Impersonate-User")
        if impersonated:
            if user.allow is not None and not user.may("impersonate", "users", None):
                raise errors.forbidden(user.name, "impersonate", "users", "", None, impersonated)
            user = next((u for u in self.users.values() if u.name == impersonated), User(impersonated, ()))
        return user

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        info = _RequestInfo()
        started = time.time()
        response: web.StreamResponse
        try:
            response = await self._dispatch(request, info)
        except ApiError as error:
            response = _error_response(error)
        except asyncio.CancelledError:
            # The client left mid-answer (typically closing a watch): the request still happened.
            self._audit(request, info, started, 200 if info.verb == "watch" else 499)
            raise
        except Exception as error:  # never crash or hang a client: answer like the real server would
            log.exception("sandbox API server failed on %s %s", request.method, request.path)
            response = _error_response(errors.internal(str(error)))
        self._audit(request, info, started, response.status)
        return response

    def _audit(self, request: web.Request, info: _RequestInfo, started: float, code: int) -> None:
        if not info.verb:
            return
        self.audit.record(
            AuditEntry(
                time=started,
                verb=info.verb,
                group=info.group,
                version=info.version,
                resource=info.resource,
                subresource=info.subresource,
                namespace=info.namespace,
                name=info.name,
                user=info.user,
                user_agent=request.headers.get("User-Agent", ""),
                code=code,
                patch_type=info.patch_type,
            )
        )

    async def _dispatch(self, request: web.Request, info: _RequestInfo) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        segments = [s for s in path.split("/") if s]
        if segments[:1] == ["sandbox"]:
            return await self._sandbox_endpoint(request, segments[1:])
        user = self._authenticate(request)
        info.user = user.name
        if request.method == "GET" and segments[:1] == ["openapi"]:
            return self._openapi(segments)
        if request.method == "GET" and len(segments) <= 3:
            document = self._discovery(request, segments)
            if document is not None:
                return document
        target = self._resolve(segments)
        if target is None:
            raise errors.path_not_found()
        rtype = target.rtype
        info.group, info.version, info.resource = rtype.group, rtype.version, rtype.plural
        info.subresource, info.namespace, info.name = target.subresource, target.namespace, target.name
        info.verb = self._verb(request, target)
        if not user.may(info.verb, rtype.plural, target.subresource):
            raise errors.forbidden(
                user.name, info.verb, rtype.plural, rtype.group, target.namespace, target.name
            )
        await self._inject_faults(info)
        if info.verb == "watch":
            return await self._watch(request, target, info)
        return await self._serve(request, target, info)

    def _discovery(self, request: web.Request, segments: list[str]) -> web.StreamResponse | None:
        registry = self.store.registry
        accept = request.headers.get("Accept", "")
        if segments == ["version"]:
            return _json(discovery.KUBERNETES_VERSION)
        if segments == ["api"]:
            if discovery.wants_aggregated(accept):
                return _json(discovery.aggregated(registry, core=True), content_type=discovery.AGGREGATED_V2)
            return _json(discovery.api_versions(f"{self.host}:{self.port}"))
        if segments == ["apis"]:
            if discovery.wants_aggregated(accept):
                return _json(discovery.aggregated(registry, core=False), content_type=discovery.AGGREGATED_V2)
            return _json(discovery.api_group_list(registry))
        if segments == ["api", "v1"]:
            return _json(discovery.api_resource_list(registry, "", "v1"))
        if len(segments) == 2 and segments[0] == "apis":
            group_document = discovery.api_group(registry, segments[1])
            if group_document is None:
                raise errors.path_not_found()
            return _json(group_document)
        if len(segments) == 3 and segments[0] == "apis":
            resources = discovery.api_resource_list(registry, segments[1], segments[2])
            if resources is None:
                raise errors.path_not_found()
            return _json(resources)
        if segments and segments[0] in ("healthz", "readyz", "livez"):
            return web.Response(text="ok", content_type="text/plain")
        return None

    def _openapi(self, segments: list[str]) -> web.StreamResponse:
        """OpenAPI v3 (paths only, see discovery.openapi_v3_group_version); v2 is not served."""
        registry = self.store.registry
        if segments == ["openapi", "v3"]:
            return _json(discovery.openapi_v3_root(registry))
        rest = segments[2:]
        document = None
        if segments[:2] == ["openapi", "v3"]:
            if rest[:1] == ["api"] and len(rest) == 2:
                document = discovery.openapi_v3_group_version(registry, "", rest[1])
            elif rest[:1] == ["apis"] and len(rest) == 3:
                document = discovery.openapi_v3_group_version(registry, rest[1], rest[2])
        if document is None:
            raise errors.path_not_found()
        return _json(document)

    def _resolve(self, segments: list[str]) -> _Target | None:
        if len(segments) >= 2 and segments[0] == "api" and segments[1] == "v1":
            group, version, rest = "", "v1", segments[2:]
        elif len(segments) >= 3 and segments[0] == "apis":
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            return None
        watch_path = False
        if rest[:1] == ["watch"]:
            watch_path, rest = True, rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        rtype = self.store.registry.get(group, version, rest[0])
        if rtype is None:
            return None
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if namespace is not None and not rtype.namespaced:
            return None
        if subresource is not None and not (
            (subresource == "status" and rtype.has_status) or (subresource == "scale" and rtype.has_scale)
        ):
            return None
        return _Target(rtype, namespace, name, subresource, watch_path)

    @staticmethod
    def _verb(request: web.Request, target: _Target) -> str:
        method = request.method
        if method == "GET":
            if target.watch_path or _truthy(request.query.get("watch")):
                return "watch"
            return "get" if target.name else "list"
        if method == "POST" and not target.name:
            return "create"
        if method == "PUT" and target.name:
            return "update"
        if method == "PATCH" and target.name:
            return "patch"
        if method == "DELETE":
            return "delete" if target.name else "deletecollection"
        raise errors.method_not_allowed()

    async def _inject_faults(self, info: _RequestInfo) -> None:
        if not self.faults:
            return
        args = (info.verb, info.resource, info.subresource, info.namespace, info.name)
        for fault in self.faults.draw(("latency",), *args):
            await asyncio.sleep(fault.latency_ms / 1000)
        for fault in self.faults.draw(("error",), *args):
            raise _fault_error(fault.code)
        if self.faults.draw(("conflict",), *args):
            raise errors.conflict(info.resource, info.group, info.name or "")

    # ------------------------------------------------------------------ non-watch verbs

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if not raw.strip():
            raise errors.bad_request("the body of the request is empty")
        if content_type == protobuf.PROTOBUF:
            return protobuf.decode(raw)
        try:
            if content_type in ("application/yaml", APPLY_PATCH):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as error:
            raise errors.bad_request(f"the body of the request could not be decoded: {error}") from None

    async def _serve(self, request: web.Request, target: _Target, info: _RequestInfo) -> web.StreamResponse:
        store, rtype, verb = self.store, target.rtype, info.verb
        query = request.query
        dry_run = query.get("dryRun") == "All"
        namespace = target.namespace
        if rtype.namespaced and namespace is None and verb in ("create", "deletecollection"):
            raise errors.method_not_allowed()  # only list and watch exist across namespaces
        if target.subresource == "scale":
            return await self._scale(request, target, info, dry_run)
        if verb == "get":
            obj = store.get_ref(rtype, target.name or "", namespace)
            return self._respond_object(request, rtype, obj)
        if verb == "list":
            return self._list(request, target)
        if verb == "create":
            body = await self._body(request)
            self._check_field_validation(request, rtype, body)
            created = store.create_ref(rtype, body, namespace, dry_run=dry_run)
            return _json(created, 201)
        if verb == "update":
            body = await self._body(request)
            if target.subresource is None:
                self._check_field_validation(request, rtype, body)
            updated = store.update_ref(
                rtype, body, namespace, name=target.name, subresource=target.subresource, dry_run=dry_run
            )
            return _json(updated, 200)
        if verb == "patch":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type not in PATCH_TYPES:
                raise errors.unsupported_media_type(content_type)
            info.patch_type = content_type
            body = await self._body(request)
            existed = True
            if content_type == APPLY_PATCH:
                try:
                    store.get_ref(rtype, target.name or "", namespace)
                except ApiError:
                    existed = False
            patched = store.patch_ref(
                rtype,
                target.name or "",
                body,
                namespace,
                patch_type=content_type,
                subresource=target.subresource,
                dry_run=dry_run,
            )
            return _json(patched, 200 if existed else 201)
        if verb == "delete":
            options = await self._delete_options(request)
            before = store.get_ref(rtype, target.name or "", namespace)
            result = store.delete_ref(
                rtype,
                target.name or "",
                namespace,
                propagation_policy=options.get("propagationPolicy"),
                preconditions=options.get("preconditions"),
                dry_run=dry_run,
            )
            if (result.get("metadata") or {}).get("deletionTimestamp") and not dry_run:
                still_there = self._exists(rtype, namespace, target.name or "")
                if still_there:
                    return _json(result, 200)
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": target.name,
                        "group": rtype.group,
                        "kind": rtype.plural,
                        "uid": before["metadata"].get("uid"),
                    },
                }
            )
        if verb == "deletecollection":
            options = await self._delete_options(request)
            items, _ = store.list_refs(
                rtype,
                namespace,
                label_selector=query.get("labelSelector"),
                field_selector=query.get("fieldSelector"),
            )
            deleted = []
            for item in items:
                meta = item["metadata"]
                with contextlib.suppress(ApiError):
                    deleted.append(
                        store.delete_ref(
                            rtype,
                            meta["name"],
                            meta.get("namespace"),
                            propagation_policy=options.get("propagationPolicy"),
                            dry_run=dry_run,
                        )
                    )
            return _json(
                {
                    "kind": rtype.list_kind,
                    "apiVersion": rtype.api_version,
                    "metadata": {"resourceVersion": store.resource_version},
                    "items": deleted,
                }
            )
        raise errors.method_not_allowed()

    @staticmethod
    def _check_field_validation(request: web.Request, rtype: ResourceType, body: Any) -> None:
        """`fieldValidation=Strict` refuses fields a CRD schema does not declare (400), as kubectl expects."""
        if request.query.get("fieldValidation") != "Strict" or rtype.schema is None:
            return
        unknown = kinds.unknown_fields(rtype, body)
        if unknown:
            listed = ", ".join(f'unknown field "{path}"' for path in unknown)
            raise errors.bad_request(f"strict decoding error: {listed}")

    def _exists(self, rtype: ResourceType, namespace: str | None, name: str) -> bool:
        try:
            self.store.get_ref(rtype, name, namespace)
        except ApiError:
            return False
        return True

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        raw = await request.read()
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError as error:
                raise errors.bad_request(f"the body of the request could not be decoded: {error}") from None
            if isinstance(parsed, dict):
                options.update(parsed)
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        if options.get("orphanDependents") is True and not options.get("propagationPolicy"):
            options["propagationPolicy"] = "Orphan"
        return options

    def _respond_object(self, request: web.Request, rtype: ResourceType, obj: dict[str, Any]) -> web.Response:
        table_version = _table_version(request.headers.get("Accept", ""))
        if table_version is None:
            return _json(obj)
        return _json(
            render_table(
                rtype,
                [obj],
                now=self.store.now(),
                resource_version=None,
                include_object=request.query.get("includeObject", "Metadata"),
                table_version=table_version,
            )
        )

    def _list(self, request: web.Request, target: _Target) -> web.Response:
        query = request.query
        rtype = target.rtype
        items, rv = self.store.list_refs(
            rtype,
            target.namespace,
            label_selector=query.get("labelSelector"),
            field_selector=query.get("fieldSelector"),
        )
        continue_token = None
        start = 0
        if query.get("continue"):
            try:
                decoded = json.loads(base64.urlsafe_b64decode(query["continue"].encode()))
                start_after = tuple(decoded["after"])
                rv = str(decoded.get("rv", rv))
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("continue key is not valid") from None
            keys = [(i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in items]
            start = next((index for index, key in enumerate(keys) if key > start_after), len(keys))
        limit = int(query.get("limit", "0") or 0)
        remaining = None
        if limit > 0 and len(items) - start > limit:
            page = items[start : start + limit]
            last = page[-1]["metadata"]
            continue_token = base64.urlsafe_b64encode(
                _dumps({"rv": rv, "after": [last.get("namespace", ""), last["name"]]})
            ).decode()
            remaining = len(items) - start - limit
        else:
            page = items[start:]
        table_version = _table_version(request.headers.get("Accept", ""))
        if table_version is not None:
            return _json(
                render_table(
                    rtype,
                    page,
                    now=self.store.now(),
                    resource_version=rv,
                    include_object=query.get("includeObject", "Metadata"),
                    table_version=table_version,
                    continue_token=continue_token,
                )
            )
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if continue_token:
            metadata["continue"] = continue_token
            metadata["remainingItemCount"] = remaining
        return _json(
            {"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": metadata, "items": page}
        )

    async def _scale(
        self, request: web.Request, target: _Target, info: _RequestInfo, dry_run: bool
    ) -> web.Response:
        store, rtype = self.store, target.rtype
        name = target.name or ""
        current = store.get_ref(rtype, name, target.namespace)
        scale = _scale_of(current)
        if info.verb == "get":
            return _json(scale)
        body = await self._body(request)
        if info.verb == "update":
            desired = body
        elif info.verb == "patch":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type not in PATCH_TYPES:
                raise errors.unsupported_media_type(content_type)
            info.patch_type = content_type
            from canaryd.sandbox.server.patching import apply_patch

            desired = apply_patch(scale, body, content_type)
        else:
            raise errors.method_not_allowed()
        if not isinstance(desired, dict):
            raise errors.bad_request("the body of the request must be a Scale object")
        rv = (desired.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "") and str(rv) != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype.plural, rtype.group, name)
        replicas = (desired.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid(
                "Scale",
                "autoscaling",
                name,
                [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "spec.replicas",
                        "message": f"Invalid value: {replicas!r}: must be greater than or equal to 0",
                    }
                ],
            )
        updated = store.patch_ref(
            rtype,
            name,
            {"spec": {"replicas": replicas}},
            target.namespace,
            patch_type="merge",
            dry_run=dry_run,
        )
        return _json(_scale_of(updated))

    # ------------------------------------------------------------------ watch

    async def _watch(self, request: web.Request, target: _Target, info: _RequestInfo) -> web.StreamResponse:
        query = request.query
        rtype = target.rtype
        field_selector = query.get("fieldSelector")
        if target.name:
            name_selector = f"metadata.name={target.name}"
            field_selector = f"{field_selector},{name_selector}" if field_selector else name_selector
        timeout = float(query.get("timeoutSeconds", "0") or 0) or None
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        send_initial = query.get("sendInitialEvents")
        table_version = _table_version(request.headers.get("Accept", ""))
        include_object = query.get("includeObject", "Metadata")
        args = (info.verb, info.resource, info.subresource, info.namespace, info.name)
        gone = bool(self.faults.draw(("watch_gone",), *args)) if self.faults else False
        stall = bool(self.faults.draw(("watch_stall",), *args)) if self.faults else False
        drops = self.faults.draw(("watch_drop",), *args) if self.faults else []
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()

        def frame(event_type: str, obj: dict[str, Any]) -> bytes:
            if table_version is not None and event_type not in (ERROR, BOOKMARK):
                obj = render_table(
                    rtype,
                    [obj],
                    now=self.store.now(),
                    resource_version=None,
                    include_object=include_object,
                    table_version=table_version,
                )
            return _dumps({"type": event_type, "object": obj}) + b"\n"

        watch = None
        try:
            if gone:
                raise errors.gone(
                    "too old resource version: "
                    f"{query.get('resourceVersion', '0')} ({self.store.resource_version})"
                )
            watch = self.store.watch(
                rtype,
                target.namespace,
                resource_version=query.get("resourceVersion"),
                label_selector=query.get("labelSelector"),
                field_selector=field_selector,
                copy_objects=False,
                send_initial_events=None if send_initial is None else _truthy(send_initial),
            )
        except ApiError as error:
            if error.code != 410:
                raise
            await response.prepare(request)
            await response.write(frame(ERROR, error.status()))
            await response.write_eof()
            return response
        await response.prepare(request)
        deadline = time.monotonic() + timeout if timeout else None
        drop_at = time.monotonic() + min(f.after_seconds for f in drops) if drops else None
        initial_left = watch.pending() if _truthy(send_initial) else 0
        next_bookmark = time.monotonic() + self.bookmark_interval
        try:
            if _truthy(send_initial) and initial_left == 0 and bookmarks:
                await response.write(frame(BOOKMARK, self._bookmark(rtype, initial_end=True)))
            while True:
                now = time.monotonic()
                ends = [t for t in (deadline, drop_at) if t is not None]
                if ends and now >= min(ends):
                    break
                waits = [1.0] + [max(0.0, t - now) for t in ends]
                if bookmarks:
                    waits.append(max(0.0, next_bookmark - now))
                wait = min(waits)
                if stall:
                    await asyncio.sleep(wait)
                    if watch.closed:
                        break
                    continue
                item = await watch.next_raw(timeout=wait)
                if item is None:
                    if watch.closed:
                        break
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    if bookmarks and time.monotonic() >= next_bookmark:
                        await response.write(frame(BOOKMARK, self._bookmark(rtype)))
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                # Drain what is already queued into one write: fan-out to many watchers stays cheap.
                limit = initial_left if initial_left > 0 else 256
                chunk = [self._event_frame(*item) if table_version is None else frame(*item)]
                while len(chunk) < limit:
                    queued = watch.next_nowait()
                    if queued is None:
                        break
                    chunk.append(self._event_frame(*queued) if table_version is None else frame(*queued))
                await response.write(b"".join(chunk))
                if initial_left > 0:
                    initial_left -= len(chunk)
                    if initial_left == 0 and bookmarks:
                        await response.write(frame(BOOKMARK, self._bookmark(rtype, initial_end=True)))
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away; aiohttp raises these on writes to a closed transport
        finally:
            watch.close()
        return response

    def _event_frame(self, event_type: str, obj: dict[str, Any]) -> bytes:
        """The JSON line for an event; stored snapshots never change, so one encoding serves every watcher."""
        key = (id(obj), event_type)
        cached = self._frames.get(key)
        if cached is not None and cached[0] is obj:
            return cached[1]
        encoded = _dumps({"type": event_type, "object": obj}) + b"\n"
        self._frames[key] = (obj, encoded)
        if len(self._frames) > 4096:
            self._frames.popitem(last=False)
        return encoded

    def _bookmark(self, rtype: ResourceType, *, initial_end: bool = False) -> dict[str, Any]:
        metadata: dict[str, Any] = {"resourceVersion": self.store.resource_version}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": metadata}

    # ------------------------------------------------------------------ /sandbox endpoints

    async def _sandbox_endpoint(self, request: web.Request, segments: list[str]) -> web.StreamResponse:
        method = request.method
        if segments[:1] == ["faults"]:
            if method == "GET" and len(segments) == 1:
                return _json({"items": [f.as_dict() for f in self.faults.list()]})
            if method == "POST" and segments[1:] == ["seed"]:
                body = await self._body(request)
                self.faults.seed(body.get("seed") if isinstance(body, dict) else None)
                return _json({"seeded": True})
            if method == "POST" and len(segments) == 1:
                body = await self._body(request)
                if not isinstance(body, dict) or "kind" not in body:
                    raise errors.bad_request('a fault is a JSON object with at least "kind"')
                scope = {k: v for k, v in body.items() if k != "kind"}
                try:
                    fault = self.faults.add(body["kind"], **scope)
                except (ValueError, TypeError) as error:
                    raise errors.bad_request(str(error)) from None
                return _json(fault.as_dict(), 201)
            if method == "DELETE" and len(segments) == 1:
                self.faults.clear()
                return _json({"items": []})
            if method == "DELETE" and len(segments) == 2:
                if not self.faults.remove(segments[1]):
                    raise errors.not_found("faults", "sandbox.canaryd.io", segments[1])
                return _json({"deleted": segments[1]})
        if segments == ["audit"]:
            if method == "GET":
                filters: dict[str, Any] = {}
                for key, attribute in (
                    ("verb", "verb"),
                    ("resource", "resource"),
                    ("subresource", "subresource"),
                    ("namespace", "namespace"),
                    ("name", "name"),
                    ("user", "user"),
                    ("userAgent", "user_agent"),
                ):
                    if key in request.query:
                        filters[attribute] = request.query[key]
                if "code" in request.query:
                    filters["code"] = int(request.query["code"])
                return _json({"items": [e.as_dict() for e in self.audit.entries(**filters)]})
            if method == "DELETE":
                self.audit.clear()
                return _json({"items": []})
        if segments == ["watches"] and method == "DELETE":
            return _json({"closed": self.store.close_watches()})
        raise errors.path_not_found()


def _fault_error(code: int) -> ApiError:
    reasons = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
    if code == 409:
        return ApiError(409, "Conflict", "injected conflict")
    message = {
        500: "Internal error occurred: injected fault",
        503: "the server is currently unable to handle the request",
        504: "the server was unable to return a response in the time allotted",
        429: "the server has received too many requests and has asked us to try again later",
    }
    return ApiError(
        code,
        reasons.get(code, "InternalError"),
        message.get(code, f"injected fault {code}"),
        retry_after_seconds=1 if code in (429, 503) else None,
    )


def _scale_of(deployment: dict[str, Any]) -> dict[str, Any]:
    meta = deployment["metadata"]
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    status = deployment.get("status") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (deployment.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": status.get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }
