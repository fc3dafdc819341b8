"""Pod IPs that reach real processes: the cluster's pod CIDR inside a network namespace of our own.

Why this module exists: kwok gives every pod an IP from its Node's podCIDR, but no container runs, so
nothing answers there. A Gateway (Traefik) and Prometheus on the host must reach those IPs, and no
traffic may go anywhere but loopback and addresses this run owns. So the pod CIDR is put inside a
network namespace the run creates::

    host                                   netns canaryd-10-244
    ----                                   --------------------
    cdh-10-244 10.244.255.253/30  <-veth->  cdn-10-244 10.244.255.254/30
    route 10.244.0.0/16 via .254           local 10.244.0.0/24 dev lo   (one per Node podCIDR)
                                           local 10.244.1.0/24 dev lo

The ``local`` routes make every address of each Node's podCIDR an address of the namespace, so a
process may bind any pod IP there without adding it first; the veth pair's /30 is the pod CIDR's
last one, which no Node gets. The host reaches pod IPs through the veth pair and nothing else.

Pod CIDRs are reserved per run (a file created with O_EXCL under ``<cache>/podnet/``, owned by a
PID), so parallel runs on one machine never route the same CIDR; a reservation, its namespace and
the veth pair whose owner died (a test run killed with SIGKILL) are removed by the next
:func:`reserve`. Needs root and iproute2's ``ip``; without either, one line says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster import build

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
NAME_PREFIX = "canaryd-"
DEFAULT_CIDR = "10.244.0.0/16"


class PodNetError(Exception):
    """The pod network could not be set up; str() is one line naming the cause."""


def reservations_dir() -> Path:
    return build.cache_root() / "podnet"


def require_tools() -> None:
    """Root and iproute2's ``ip``, or one line saying which is missing."""
    if os.geteuid() != 0:
        raise PodNetError(
            f"pod network: creating a network namespace needs root (running as uid {os.geteuid()})"
        )
    if shutil.which("ip") is None:
        raise PodNetError("pod network: the ip command is missing (apt-get install iproute2)")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise PodNetError(f"pod network: ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def _host_routes() -> list[ipaddress.IPv4Network]:
    """Destinations of the host's IPv4 routes (main table), from /proc so no tool is needed."""
    networks = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            destination = socket.inet_ntoa(int(fields[1], 16).to_bytes(4, "little"))
            mask = socket.inet_ntoa(int(fields[7], 16).to_bytes(4, "little"))
            network = ipaddress.IPv4Network(f"{destination}/{mask}", strict=False)
            if network.prefixlen:  # the default route overlaps everything and does not count
                networks.append(network)
    return networks


def _proc_start(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def _alive(pid: int, start: str | None) -> bool:
    current = _proc_start(pid)
    return current is not None and (not start or current == start)


def names_for(cidr: str) -> tuple[str, str, str]:
    """(namespace, host-side veth, namespace-side veth) for a pod CIDR: derived, so cleanup finds them."""
    network = ipaddress.ip_network(cidr)
    octets = str(network.network_address).split(".")
    tag = f"{octets[0]}-{octets[1]}" if network.prefixlen <= 16 else "-".join(octets[:3])
    return f"{NAME_PREFIX}{tag}", f"cdh-{tag}"[:15], f"cdn-{tag}"[:15]


def link_addresses(cidr: str) -> tuple[str, str]:
    """(host side, namespace side) of the veth pair: the first two hosts of the pod CIDR's last /30."""
    network = ipaddress.IPv4Network(cidr)
    last = list(network.subnets(new_prefix=30))[-1]
    hosts = list(last.hosts())
    return str(hosts[0]), str(hosts[1])


@dataclass
class Reservation:
    """A pod CIDR this process may route; ``release`` it (or let the next ``reserve`` clean up)."""

    cidr: str
    path: Path
    created: bool = False  # made by this call (so its maker releases it), not found already held

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _candidates() -> Iterator[str]:
    yield DEFAULT_CIDR
    for second in range(200, 244):
        yield f"10.{second}.0.0/16"


def _reservation_path(cidr: str) -> Path:
    return reservations_dir() / (cidr.replace("/", "_") + ".json")


def reserve(owner_pid: int | None = None, candidates: Sequence[str] | None = None) -> Reservation:
    """Reserve a pod CIDR no live run uses and no host route overlaps (leftovers cleaned first)."""
    cleanup_stale()
    directory = reservations_dir()
    directory.mkdir(parents=True, exist_ok=True)
    owner = os.getpid() if owner_pid is None else owner_pid
    for cidr in candidates or list(_candidates()):
        if not _free(cidr):
            continue
        path = _reservation_path(cidr)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"cidr": cidr, "pid": owner, "start": _proc_start(owner)}, handle)
        return Reservation(cidr, path, created=True)
    raise PodNetError("pod network: every candidate pod CIDR is taken by another run or a host route")


def claim(cidr: str, owner_pid: int | None = None) -> Reservation:
    """The reservation of ``cidr`` for ``owner_pid`` (default: this process): its own, or a new one."""
    owner = os.getpid() if owner_pid is None else owner_pid
    path = _reservation_path(cidr)
    try:
        entry = json.loads(path.read_text())
    except FileNotFoundError:
        return reserve(owner, [cidr]) if _free(cidr) else _taken(cidr, "a host route overlaps it")
    except (OSError, ValueError) as error:
        raise PodNetError(f"pod network: unreadable reservation {path}: {error}") from error
    if int(entry.get("pid", -1)) == owner:
        return Reservation(cidr, path)
    return _taken(cidr, f"run of PID {entry.get('pid')} has reserved it ({path})")


def _free(cidr: str) -> bool:
    network = ipaddress.ip_network(cidr)
    return not any(network.overlaps(route) for route in _host_routes())


def _taken(cidr: str, why: str) -> Reservation:
    raise PodNetError(f"pod network: pod CIDR {cidr} is not free: {why}")


def _remove_network(cidr: str) -> None:
    """Stop what runs in the namespace, then remove it and the veth pair (which takes the route along)."""
    if shutil.which("ip") is None or os.geteuid() != 0:
        return
    netns, host_if, _ = names_for(cidr)
    if (NETNS_DIR / netns).exists():
        pids = _ip("netns", "pids", netns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "delete", netns, check=False)
    _ip("link", "delete", host_if, check=False)


def cleanup_stale(directory: Path | None = None) -> list[str]:
    """Remove reservations (and their namespace and veth pair) whose owner process is gone."""
    directory = directory or reservations_dir()
    removed: list[str] = []
    if not directory.is_dir():
        return removed
    for path in sorted(directory.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            cidr, pid, start = entry["cidr"], int(entry["pid"]), entry.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            if time.time() - path.stat().st_mtime < 60:
                continue  # being written right now
            path.unlink(missing_ok=True)
            continue
        if pid and _alive(pid, start):
            continue
        _remove_network(cidr)
        path.unlink(missing_ok=True)
        removed.append(cidr)
    return removed


class PodNetwork:
    """The network namespace holding a reserved pod CIDR; ``create`` it, ``listen`` in it, ``delete`` it."""

    def __init__(self, cidr: str, node_cidrs: Sequence[str]) -> None:
        self.cidr = cidr
        self.node_cidrs = list(node_cidrs)
        self.netns, self.host_if, self.netns_if = names_for(cidr)
        self.host_address, self.netns_address = link_addresses(cidr)
        network = ipaddress.IPv4Network(cidr)
        for node_cidr in self.node_cidrs:
            sub = ipaddress.IPv4Network(node_cidr)
            if not sub.subnet_of(network) or sub.overlaps(
                ipaddress.ip_network(f"{self.host_address}/30", False)
            ):
                raise PodNetError(f"pod network: Node podCIDR {node_cidr} is not usable inside {cidr}")

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.netns

    def create(self) -> PodNetwork:
        """Namespace, veth pair, addresses, the local routes inside and the pod CIDR route outside."""
        require_tools()
        _remove_network(self.cidr)  # a leftover of our own reservation's previous owner
        try:
            _ip("netns", "add", self.netns)
            _ip(
                "link",
                "add",
                self.host_if,
                "type",
                "veth",
                "peer",
                "name",
                self.netns_if,
                "netns",
                self.netns,
            )
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.netns, "link", "set", "lo", "up")
            _ip("-n", self.netns, "addr", "add", f"{self.netns_address}/30", "dev", self.netns_if)
            _ip("-n", self.netns, "link", "set", self.netns_if, "up")
            for node_cidr in self.node_cidrs:
                _ip("-n", self.netns, "route", "add", "local", node_cidr, "dev", "lo")
            _ip("route", "add", self.cidr, "via", self.netns_address, "dev", self.host_if)
        except BaseException:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        _remove_network(self.cidr)

    def exists(self) -> bool:
        return self.path.exists()

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread inside the namespace for the ``with`` block (setns), then back."""
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError as error:
            os.close(own)
            raise PodNetError(f"pod network: namespace {self.netns} is gone") from error
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise PodNetError(f"pod network: setns into {self.netns} failed: {os.strerror(errno)}")
            try:
                yield
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - would leave the thread stranded
                    raise OSError(ctypes.get_errno(), "setns back to the host namespace failed")
        finally:
            os.close(target)
            os.close(own)

    def listen(self, address: str, port: int, backlog: int = 128) -> socket.socket:
        """A TCP socket listening on ``address:port`` inside the namespace (it stays there once made)."""
        with self.entered():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock
