"""Start and stop a real Kubernetes control plane on loopback, for tests and for people.

Why this module exists: canaryd's sandbox is a stand-in API server; some behaviour (watches, RBAC,
admission, the controllers that turn a Deployment into ready pods and EndpointSlices, audit) can only
be trusted against the real thing. :class:`Cluster` runs etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (which plays the kubelets of the fake Nodes it is given) as plain processes,
each with its own PID file and log in one run directory, on free loopback ports, and installs the
Gateway API CRDs. Binaries come from :mod:`cluster.build`.

Only the standard library and the ``openssl`` CLI are used, so ``scripts/cluster`` runs with any
Python 3.11. A run directory whose owner process died (a test run killed with SIGKILL) is cleaned up
by the next :meth:`Cluster.create`.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from cluster import build

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
STATE_FILE = "cluster.json"
OWNER_FILE = "owner.pid"
DEFAULT_KWOK_STAGES = (
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)
#: On a pod template: kwok leaves these pods Pending (not Ready) until a test makes each one ready with
#: ``Cluster.make_pod_ready`` — the readiness probe that passes one pod at a time.
READY_BY_HAND_ANNOTATION = "cluster.canaryd.io/ready-by-hand"


#: A Running pod whose Ready condition someone else set to False (kube-controller-manager's node lifecycle
#: controller does so for every pod of a Node whose heartbeat it missed) is reported Ready again, as its
#: kubelet would on its next status sync. kwok's pod-ready Stage only readies Pending pods: without this,
#: once kube-controller-manager lagged behind the Node leases after a control-plane restart, the pods it
#: marked stayed not Ready for good and no Deployment with them could finish a rollout.
POD_READY_AGAIN_STAGE = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready-again
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.annotations["{READY_BY_HAND_ANNOTATION}"]'
      operator: 'DoesNotExist'
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'In'
      values:
      - 'False'
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}

      conditions:
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Ready
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: ContainersReady
      {{{{ range .spec.readinessGates }}}}
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: {{{{ .conditionType | Quote }}}}
      {{{{ end }}}}"""


def _holding_back_marked_pods(stage: str) -> str:
    """kwok's pod-ready Stage, made to pass over pods annotated ``READY_BY_HAND_ANNOTATION``."""
    anchor = "    matchExpressions:\n"
    if "name: pod-ready" not in stage or anchor not in stage:
        return stage
    held = (
        f"    - key: '.metadata.annotations[\"{READY_BY_HAND_ANNOTATION}\"]'\n"
        "      operator: 'DoesNotExist'\n"
    )
    return stage.replace(anchor, anchor + held, 1)


class ClusterError(Exception):
    """The cluster could not be started or driven; str() leads with one line naming the cause."""


class PortInUse(ClusterError):
    """A port picked as free was taken before a component bound it (another run raced us): retry."""


def runs_dir() -> Path:
    """Where run directories live unless one is given: every ``create`` looks here for leftovers."""
    return build.cache_root() / "runs"


@dataclass
class ClusterConfig:
    """What kind of cluster to start. Every field has a default that tests can rely on."""

    nodes: int = 2
    pod_cidr: str = "10.244.0.0/16"  # split into one podCIDR per Node (a /24 each when it fits)
    service_cidr: str = "10.96.0.0/16"
    node_ip: str = "127.0.0.1"  # the InternalIP kwok gives every Node (and so pods' hostIP)
    gateway_api: str | None = "standard"  # Gateway API CRD channel to install, or None
    controllers: str = "*"  # kube-controller-manager --controllers
    audit_level: str = "Metadata"  # audit policy level for every request (None, Metadata, Request, ...)
    start_timeout: float = 180.0
    extra_args: dict[str, list[str]] = field(default_factory=dict)  # component -> additional flags
    # kwok Stage YAML files that decide how fake Nodes and pods behave; None: kwok's "fast" set
    # (Nodes Ready with leases, pods Running and Ready at once, deleted pods gone at once).
    kwok_stages: list[str] | None = None

    def node_cidrs(self) -> list[str]:
        network = ipaddress.ip_network(self.pod_cidr)
        bits = max(self.nodes - 1, 0).bit_length()
        prefix = max(network.prefixlen + bits, 24 if network.version == 4 else 64)
        if prefix > network.max_prefixlen:
            raise ClusterError(f"pod CIDR {self.pod_cidr} is too small for {self.nodes} nodes")
        subnets = network.subnets(new_prefix=prefix)
        return [str(next(subnets)) for _ in range(self.nodes)]


# ---------------------------------------------------------------------------------------------------------
# Processes


def _proc_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def _pid_alive(pid: int, start_time: str | None = None) -> bool:
    current = _proc_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def _read_pid_file(path: Path) -> tuple[int, str | None] | None:
    try:
        parts = path.read_text().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None


def _terminate(
    pid: int, start_time: str | None, timeout: float, proc: subprocess.Popen[bytes] | None
) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only if the PID still names the process we started."""
    if not _pid_alive(pid, start_time):
        if proc is not None:
            proc.poll()
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not _pid_alive(pid, start_time):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    else:
        deadline = time.monotonic() + 5
        while _pid_alive(pid, start_time) and time.monotonic() < deadline:
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    """Whether nothing listens on the port (connections of a stopped server in TIME_WAIT don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's servers do
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------------------
# Certificates and credentials (openssl CLI)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {proc.stderr.strip().splitlines()[-1:]}")


def _make_pki(pki: Path, service_ip: str) -> None:
    if not shutil.which("openssl"):
        raise ClusterError("the openssl command is missing (apt-get install openssl)")
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (pki / "ca.cnf").write_text(
        "[req]\ndistinguished_name=dn\nx509_extensions=v3\nprompt=no\n[dn]\nCN=canaryd-cluster-ca\n"
        "[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier=hash\n"
    )
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-config",
        "ca.cnf",
        cwd=pki,
    )
    sans = [
        "IP:127.0.0.1",
        "DNS:localhost",
        f"IP:{service_ip}",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    leaves = {
        "apiserver": ("/CN=kube-apiserver", "serverAuth", ",".join(sans)),
        "admin": ("/O=system:masters/CN=admin", "clientAuth", None),
    }
    for name, (subject, usage, san) in leaves.items():
        ext = "[v3]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        ext += f"extendedKeyUsage={usage}\nauthorityKeyIdentifier=keyid\n"
        if san:
            ext += f"subjectAltName={san}\n"
        (pki / f"{name}.ext").write_text(ext)
        _openssl(
            "req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=pki
        )
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-set_serial", str(secrets.randbits(63)), "-days", "3650",
            "-extfile", f"{name}.ext", "-extensions", "v3", "-out", f"{name}.crt",
            cwd=pki,
        )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for path in pki.iterdir():
        if path.suffix == ".key":
            path.chmod(0o600)


def _kubeconfig(
    server: str, ca_file: Path, user: str, token: str, namespace: str = "default"
) -> dict[str, Any]:
    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "canaryd", "cluster": {"server": server, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "canaryd", "context": {"cluster": "canaryd", "user": user, "namespace": namespace}}
        ],
        "current-context": "canaryd",
    }


# ---------------------------------------------------------------------------------------------------------
# The cluster


@dataclass
class _State:
    """What ``cluster.json`` records, so another process (``scripts/cluster env``) can use the cluster."""

    config: dict[str, Any]
    ports: dict[str, int]
    tokens: dict[str, str]
    versions: dict[str, str]
    binaries: dict[str, str]
    created: float


class Cluster:
    """One control plane in one run directory. Make it with :meth:`create`, or :meth:`load` a running one.

    Attributes for tests: ``run_dir``, ``server`` (https URL), ``kubeconfig`` (admin, token auth),
    ``ca_file``, ``admin_token``, ``client_cert``/``client_key`` (admin in system:masters),
    ``audit_log``, ``pod_cidr``, ``service_cidr``, ``node_names``, ``version`` (the built Kubernetes
    version, e.g. ``v1.35.4``), ``ports``, ``config``, ``start_seconds``.
    """

    def __init__(self, run_dir: Path, config: ClusterConfig, state: _State) -> None:
        self.run_dir = run_dir
        self.config = config
        self._state = state
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._ssl: ssl.SSLContext | None = None
        self.start_seconds: float | None = None

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        config: ClusterConfig | None = None,
        run_dir: Path | str | None = None,
        *,
        owner_pid: int | None = None,
        build_output: TextIO | None = None,
    ) -> Cluster:
        """Prepare (not start) a cluster: build what is missing, clean leftovers, pick ports, make certs.

        ``owner_pid`` is the process whose death makes the run a leftover for the next ``create`` to clean
        (default: this process; 0 for a cluster that outlives its creator, as ``scripts/cluster up``).
        Build progress, if anything must be built, goes to ``build_output`` (default: stdout).
        """
        config = config or ClusterConfig()
        cleanup_stale()
        targets = ["etcd", "kubernetes", "kwok"] + (["gateway-api"] if config.gateway_api else [])
        try:
            build.ensure(targets, echo=not all(build.is_cached(t) for t in targets), stream=build_output)
        except build.BuildError as error:
            raise ClusterError(f"cluster build: {error}") from error
        if run_dir is None:
            runs_dir().mkdir(parents=True, exist_ok=True)
            run_dir = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=runs_dir()))
        run_dir = Path(run_dir).resolve()
        if (run_dir / STATE_FILE).exists():
            existing = cls.load(run_dir)
            if any(existing.alive(name) for name in COMPONENTS):
                raise ClusterError(
                    f"a cluster is already running in {run_dir} (scripts/cluster down --dir {run_dir})"
                )
            existing.stop(remove=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        owner = os.getpid() if owner_pid is None else owner_pid
        (run_dir / OWNER_FILE).write_text(f"{owner} {(_proc_start_time(owner) or '') if owner else ''}\n")
        service_ip = str(next(ipaddress.ip_network(config.service_cidr).hosts()))
        _make_pki(run_dir / "pki", service_ip)
        names = ("etcd-client", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
        ports: dict[str, int] = {}
        while len(ports) < len(names):  # distinct even if the kernel hands one out twice
            port = _free_port()
            if port not in ports.values():
                ports[names[len(ports)]] = port
        tokens = {
            user: secrets.token_hex(16) for user in ("admin", "controller-manager", "scheduler", "kwok")
        }
        binaries = {name: str(build.binary(name)) for name in (*COMPONENTS, "kubectl")}
        stages = config.kwok_stages or [str(build.data_file("kwok", name)) for name in DEFAULT_KWOK_STAGES]
        documents = [_holding_back_marked_pods(Path(stage).read_text().strip()) for stage in stages]
        if config.kwok_stages is None:
            documents.append(POD_READY_AGAIN_STAGE)
        (run_dir / "kwok.yaml").write_text("\n---\n".join(documents) + "\n")
        versions = build.versions()
        state = _State(asdict(config), ports, tokens, versions, binaries, time.time())
        cluster = cls(run_dir, config, state)
        cluster._write_files()
        return cluster

    @classmethod
    def load(cls, run_dir: Path | str) -> Cluster:
        """A cluster some process started in ``run_dir`` (for ``scripts/cluster env|status|down``)."""
        run_dir = Path(run_dir).resolve()
        try:
            raw = json.loads((run_dir / STATE_FILE).read_text())
        except FileNotFoundError as error:
            raise ClusterError(
                f"no cluster in {run_dir} (start one: scripts/cluster up --dir {run_dir})"
            ) from error
        except (OSError, ValueError) as error:
            raise ClusterError(f"unreadable cluster state in {run_dir}: {error}") from error
        state = _State(**raw)
        return cls(run_dir, ClusterConfig(**state.config), state)

    # -- paths and credentials -----------------------------------------------------------------------------

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._state.ports)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self._state.ports['kube-apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        return self.run_dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.run_dir / "pki" / "ca.crt"

    @property
    def client_cert(self) -> Path:
        return self.run_dir / "pki" / "admin.crt"

    @property
    def client_key(self) -> Path:
        return self.run_dir / "pki" / "admin.key"

    @property
    def admin_token(self) -> str:
        return self._state.tokens["admin"]

    @property
    def audit_log(self) -> Path:
        return self.run_dir / "audit.log"

    @property
    def pod_cidr(self) -> str:
        return self.config.pod_cidr

    @property
    def service_cidr(self) -> str:
        return self.config.service_cidr

    @property
    def node_names(self) -> list[str]:
        return [f"kwok-node-{index}" for index in range(self.config.nodes)]

    @property
    def version(self) -> str:
        return self._state.versions["kubernetes"]

    @property
    def versions(self) -> dict[str, str]:
        return dict(self._state.versions)

    @property
    def kubectl_path(self) -> Path:
        return Path(self._state.binaries["kubectl"])

    @property
    def bin_dir(self) -> Path:
        return self.kubectl_path.parent

    def log_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.pid"

    def env(self) -> dict[str, str]:
        """Environment for clients: KUBECONFIG, and PATH with the matching kubectl first."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "CANARYD_CLUSTER_DIR": str(self.run_dir),
        }

    def _write_files(self) -> None:
        run, pki, tokens = self.run_dir, self.run_dir / "pki", self._state.tokens
        lines = [
            f'{tokens["admin"]},admin,admin,"system:masters"',
            f"{tokens['controller-manager']},system:kube-controller-manager,system:kube-controller-manager",
            f"{tokens['scheduler']},system:kube-scheduler,system:kube-scheduler",
            f'{tokens["kwok"]},kwok,kwok,"system:masters"',
        ]
        (pki / "tokens.csv").write_text("\n".join(lines) + "\n")
        (pki / "tokens.csv").chmod(0o600)
        users = {
            "kubeconfig": ("admin", "admin"),
            "controller-manager.kubeconfig": ("system:kube-controller-manager", "controller-manager"),
            "scheduler.kubeconfig": ("system:kube-scheduler", "scheduler"),
            "kwok.kubeconfig": ("kwok", "kwok"),
        }
        for file_name, (user, token_key) in users.items():
            config = _kubeconfig(self.server, self.ca_file, user, tokens[token_key])
            (run / file_name).write_text(json.dumps(config, indent=1) + "\n")
            (run / file_name).chmod(0o600)
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [{"level": self.config.audit_level}],
        }
        (run / "audit-policy.json").write_text(json.dumps(policy) + "\n")
        (run / STATE_FILE).write_text(json.dumps(asdict(self._state), indent=1) + "\n")

    # -- command lines -------------------------------------------------------------------------------------

    def _argv(self, component: str) -> list[str]:
        run, pki, ports = self.run_dir, self.run_dir / "pki", self._state.ports
        binary = self._state.binaries[component]
        etcd_url = f"http://127.0.0.1:{ports['etcd-client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        if component == "etcd":
            args = [
                "--name=etcd",
                f"--data-dir={run / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=etcd={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ]
        elif component == "kube-apiserver":
            args = [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['kube-apiserver']}",
                f"--cert-dir={run / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={pki / 'tokens.csv'}",
                # Fills kube-system/extension-apiserver-authentication, which the controller manager and
                # scheduler read; no front proxy exists, so no client can use it.
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={self.config.service_cidr}",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                f"--audit-policy-file={run / 'audit-policy.json'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=0",
                "--audit-log-maxbackup=0",
                "--profiling=false",
                # Without it a SIGTERM waits 60 s for open watches to end before the process exits.
                "--shutdown-watch-termination-grace-period=2s",
            ]
        elif component == "kube-controller-manager":
            kubeconfig = run / "controller-manager.kubeconfig"
            args = [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kube-controller-manager']}",
                "--leader-elect=false",
                f"--controllers={self.config.controllers}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={self.config.service_cidr}",
                "--profiling=false",
            ]
        elif component == "kube-scheduler":
            kubeconfig = run / "scheduler.kubeconfig"
            args = [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kube-scheduler']}",
                "--leader-elect=false",
                "--profiling=false",
            ]
        elif component == "kwok":
            args = [
                f"--kubeconfig={run / 'kwok.kubeconfig'}",
                f"--config={run / 'kwok.yaml'}",
                "--manage-all-nodes=true",
                "--node-lease-duration-seconds=40",
                f"--cidr={self.config.pod_cidr}",
                f"--node-ip={self.config.node_ip}",
            ]
        else:
            raise ValueError(component)
        return [binary, *args, *self.config.extra_args.get(component, [])]

    def _component_ports(self, component: str) -> list[int]:
        ports = self._state.ports
        return {
            "etcd": [ports["etcd-client"], ports["etcd-peer"]],
            "kube-apiserver": [ports["kube-apiserver"]],
            "kube-controller-manager": [ports["kube-controller-manager"]],
            "kube-scheduler": [ports["kube-scheduler"]],
        }.get(component, [])

    # -- process control -----------------------------------------------------------------------------------

    def _spawn(self, component: str) -> None:
        if self.alive(component):
            return
        for port in self._component_ports(component):
            if not _port_free(port):
                raise PortInUse(f"{component}: port 127.0.0.1:{port} is already in use by another process")
        log = self.log_file(component).open("ab")
        log.write(f"\n==== {time.strftime('%H:%M:%S')} starting {component}\n".encode())
        log.flush()
        env = dict(os.environ)
        env["HOME"] = str(self.run_dir)  # kwok would read ~/.kwok/kwok.yaml; nothing reads a user's config
        env.pop("KUBECONFIG", None)
        try:
            proc = subprocess.Popen(
                self._argv(component),
                cwd=self.run_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only us; down stops them
                env=env,
            )
        finally:
            log.close()
        self._procs[component] = proc
        self.pid_file(component).write_text(f"{proc.pid} {_proc_start_time(proc.pid) or ''}\n")

    def alive(self, component: str) -> bool:
        proc = self._procs.get(component)
        if proc is not None:
            return proc.poll() is None
        entry = _read_pid_file(self.pid_file(component))
        return entry is not None and _pid_alive(*entry)

    def pid(self, component: str) -> int | None:
        entry = _read_pid_file(self.pid_file(component))
        return entry[0] if entry and self.alive(component) else None

    def stop_component(self, component: str, timeout: float = 10.0) -> None:
        """SIGTERM (then SIGKILL after ``timeout``) one component, by its PID file."""
        entry = _read_pid_file(self.pid_file(component))
        proc = self._procs.pop(component, None)
        if entry is not None:
            _terminate(entry[0], entry[1], timeout, proc)
        elif proc is not None:
            _terminate(proc.pid, None, timeout, proc)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file(component).unlink()

    def kill_component(self, component: str) -> None:
        """SIGKILL one component at once (a crash, for failure tests)."""
        self.stop_component(component, timeout=0)

    def _crash_error(self, component: str) -> ClusterError:
        proc = self._procs.get(component)
        code = proc.returncode if proc is not None else None
        log = self.log_file(component)
        tail = _tail(log)
        if "address already in use" in tail:
            ports = ", ".join(str(p) for p in self._component_ports(component))
            return PortInUse(f"{component}: a port it needs ({ports}) is already in use; log: {log}\n{tail}")
        return ClusterError(f"{component} exited (code {code}) while starting; last lines of {log}:\n{tail}")

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, watch: tuple[str, ...]) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            for component in watch:
                if not self.alive(component):
                    raise self._crash_error(component)
            try:
                if check():
                    return
            except (OSError, ClusterError, ValueError) as error:
                last = error
            if time.monotonic() > deadline:
                detail = f" (last error: {last})" if last else ""
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
            time.sleep(0.1)

    def _api_ready(self) -> bool:
        status, _ = self.api("GET", "/readyz", timeout=2)
        return status == 200

    def start_etcd(self, timeout: float = 30.0) -> None:
        self._spawn("etcd")
        url = f"http://127.0.0.1:{self._state.ports['etcd-client']}/health"

        def healthy() -> bool:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(json.loads(response.read()).get("health") == "true")

        self._wait("etcd to be healthy", healthy, timeout, ("etcd",))

    def start_apiserver(self, timeout: float = 60.0) -> None:
        self._spawn("kube-apiserver")
        self._wait("kube-apiserver /readyz", self._api_ready, timeout, ("etcd", "kube-apiserver"))

    def stop_apiserver(self) -> None:
        self.stop_component("kube-apiserver")

    def restart_apiserver(self, timeout: float = 60.0) -> None:
        self.stop_apiserver()
        self.start_apiserver(timeout)

    def stop_etcd(self) -> None:
        self.stop_component("etcd")

    def restart_etcd(self, timeout: float = 60.0) -> None:
        """Restart etcd with its data; waits until kube-apiserver is ready again too (if it runs)."""
        self.stop_etcd()
        self.start_etcd(timeout)
        if self.alive("kube-apiserver"):
            self._wait("kube-apiserver /readyz after etcd restart", self._api_ready, timeout, ("etcd",))

    def start(self) -> float:
        """Start every component, create the Nodes and CRDs, wait until all is ready; returns seconds."""
        began = time.monotonic()
        timeout = self.config.start_timeout
        try:
            self.start_etcd(timeout)
            self.start_apiserver(timeout)
            for component in ("kube-controller-manager", "kube-scheduler", "kwok"):
                self._spawn(component)
            self._create_nodes()
            crds = self._install_crds()
            self._wait_ready(crds, began + timeout - time.monotonic())
        except BaseException:
            self.stop(remove=False)
            raise
        self.start_seconds = time.monotonic() - began
        return self.start_seconds

    def stop(self, remove: bool = True) -> None:
        """Stop every component (reverse order) by PID file; remove the run directory if ``remove``."""
        for component in reversed(COMPONENTS):
            self.stop_component(component)
        if remove:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- API access ----------------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the cluster's CA (and nothing else)."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def write_kubeconfig(
        self, path: Path | str, token: str, namespace: str = "default", user: str = "user"
    ) -> Path:
        """A kubeconfig for this cluster with ``token`` (e.g. from :meth:`create_token`)."""
        path = Path(path)
        path.write_text(
            json.dumps(_kubeconfig(self.server, self.ca_file, user, token, namespace), indent=1) + "\n"
        )
        path.chmod(0o600)
        return path

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One request as admin (or with ``token``); returns (HTTP status, decoded JSON or text).

        HTTP errors are returned, not raised; a refused connection raises OSError.
        """
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token or self.admin_token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context()) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def make_pod_ready(self, namespace: str, name: str) -> None:
        """Report a pod left Pending by kwok (``READY_BY_HAND_ANNOTATION``) Running and Ready, as its
        kubelet would once the readiness probe passes (no pod IP: nothing serves it)."""
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        status, pod = self.api("GET", path)
        if status != 200:
            raise ClusterError(f"pod {namespace}/{name}: HTTP {status}: {pod}")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        containers = (pod.get("spec") or {}).get("containers") or []
        conditions = [
            {"type": kind, "status": "True", "lastTransitionTime": now}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        patch = {
            "status": {
                "phase": "Running",
                "startTime": now,
                "conditions": conditions,
                "containerStatuses": [
                    {"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "started": True,
                     "restartCount": 0, "state": {"running": {"startedAt": now}}}
                    for c in containers
                ],
            }
        }  # fmt: skip
        status, answer = self.api(
            "PATCH", f"{path}/status", patch, content_type="application/strategic-merge-patch+json"
        )
        if status != 200:
            raise ClusterError(f"pod {namespace}/{name}: making it ready: HTTP {status}: {answer}")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the matching kubectl as admin; if ``check``, a failure raises ClusterError with its stderr."""
        env = dict(os.environ)
        env.update(self.env())
        proc = subprocess.run(
            [str(self.kubectl_path), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def helm(
        self, *args: str, check: bool = True, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """Run helm v3 against the cluster (built on first use), with its config and cache in the run dir."""
        try:
            build.ensure(["helm"], echo=not build.is_cached("helm"), stream=sys.stderr)
        except build.BuildError as error:
            raise ClusterError(f"cluster build: {error}") from error
        env = dict(os.environ)
        env.update(self.env())
        for kind in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{kind}_HOME"] = str(self.run_dir / "helm" / kind.lower())
        proc = subprocess.run(
            [str(build.binary("helm")), *args], capture_output=True, text=True, env=env, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise ClusterError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def create_token(self, service_account: str, namespace: str = "default", duration: str = "1h") -> str:
        """A token for a ServiceAccount through the TokenRequest API (what ``kubectl create token`` does)."""
        return self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event logged so far (one JSON object per line in ``audit_log``)."""
        try:
            lines = self.audit_log.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    # -- start-up steps ------------------------------------------------------------------------------------

    def _create_nodes(self) -> None:
        for name, cidr in zip(self.node_names, self.config.node_cidrs(), strict=True):
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                },
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            }
            status, body = self.api("POST", "/api/v1/nodes", node)
            if status not in (201, 409):
                raise ClusterError(f"creating Node {name} failed: HTTP {status}: {body}")

    def _install_crds(self) -> list[str]:
        if not self.config.gateway_api:
            return []
        directory = build.crd_dir(self.config.gateway_api)
        proc = self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory), "-o", "name")
        return [
            line.split("/", 1)[1]
            for line in proc.stdout.split()
            if line.startswith("customresourcedefinition")
        ]

    def _wait_ready(self, crds: list[str], timeout: float) -> None:
        watch = COMPONENTS

        pending = list(crds)

        def crds_established() -> bool:
            """Established, and every served version answers a LIST (not 429 while its cache fills)."""
            while pending:
                status, body = self.api(
                    "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{pending[0]}"
                )
                conditions = body.get("status", {}).get("conditions", []) if status == 200 else []
                if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    return False
                group, plural = body["spec"]["group"], body["spec"]["names"]["plural"]
                for version in body["spec"]["versions"]:
                    if (
                        version["served"]
                        and self.api("GET", f"/apis/{group}/{version['name']}/{plural}?limit=1")[0] != 200
                    ):
                        return False
                pending.pop(0)
            return True

        def nodes_ready() -> bool:
            status, body = self.api("GET", "/api/v1/nodes")
            ready = {
                item["metadata"]["name"]
                for item in (body.get("items", []) if status == 200 else [])
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in item["status"].get("conditions", [])
                )
            }
            return ready >= set(self.node_names)

        def default_service_account() -> bool:
            status, _ = self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            return status == 200

        self._wait("Gateway API CRDs to be Established and served", crds_established, max(timeout, 1), watch)
        self._wait("Nodes to be Ready", nodes_ready, max(timeout, 1), watch)
        self._wait("the default ServiceAccount", default_service_account, max(timeout, 1), watch)

    # -- status --------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Per component: running or not, PID, log; plus the API server's answer to /readyz."""
        components = {
            name: {"running": self.alive(name), "pid": self.pid(name), "log": str(self.log_file(name))}
            for name in COMPONENTS
        }
        try:
            ready = self.api("GET", "/readyz", timeout=2)[0] == 200
        except OSError:
            ready = False
        return {"run_dir": str(self.run_dir), "server": self.server, "ready": ready, "components": components}


# ---------------------------------------------------------------------------------------------------------
# Leftovers


def _owner(run_dir: Path) -> tuple[int, str | None] | None:
    return _read_pid_file(run_dir / OWNER_FILE)


def cleanup_stale(directory: Path | None = None) -> list[Path]:
    """Stop and remove run directories under ``runs_dir()`` whose owner process is gone.

    A run started by ``scripts/cluster up`` has no owner (0) and is left alone. Processes are only
    signalled if their PID still names the process that was started (checked by start time).
    """
    directory = directory or runs_dir()
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for run_dir in sorted(directory.iterdir()):
        if not run_dir.is_dir():
            continue
        owner = _owner(run_dir)
        if owner is not None and (owner[0] == 0 or _pid_alive(*owner)):
            continue
        if owner is None and time.time() - run_dir.stat().st_mtime < 60:
            continue  # being created right now by another process
        for component in reversed(COMPONENTS):
            entry = _read_pid_file(run_dir / f"{component}.pid")
            if entry is not None:
                _terminate(entry[0], entry[1], 10.0, None)
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed


@contextlib.contextmanager
def running(config: ClusterConfig | None = None, run_dir: Path | str | None = None) -> Iterator[Cluster]:
    """A started cluster for the ``with`` block; stopped and removed afterwards."""
    cluster = Cluster.create(config, run_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop(remove=True)
