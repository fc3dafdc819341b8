"""A real Prometheus server on a loopback port, for the sandbox and for tests.

canaryd's analysis is only as good as its handling of real Prometheus answers
(empty vectors, NaN, parse errors, outages), so neither the sandbox nor the
tests fake Prometheus: they run Debian's ``prometheus`` binary with a temporary
TSDB and a generated configuration.

Two ways to get data into it:

- scrape targets (``host:port`` list, e.g. the sandbox traffic simulator) at a
  short scrape interval, for live demos and end-to-end tests;
- ``backfill(openmetrics_text)``, which turns exact samples into TSDB blocks
  with ``promtool tsdb create-blocks-from openmetrics``, for tests that need
  exact values at a fixed time.

A running Prometheus only notices new blocks on its next periodic reload (about
once a minute), so ``backfill`` on a running server stops it, writes the
blocks and starts it again on the same port. Backfilling before ``start`` costs
nothing extra. Retention is set to a century so that backfilled samples with
old timestamps are never deleted next to freshly scraped ones.

The process is stopped by its PID (SIGTERM, wait, then SIGKILL) and every
server still running when the interpreter exits is stopped too.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from canaryd.api.durations import format_duration, parse_duration

INSTALL_HINT = (
    "Install Prometheus with: apt-get install -y --no-install-recommends prometheus "
    "(it provides both `prometheus` and `promtool`)."
)
DEFAULT_JOB_NAME = "canaryd-sandbox"
_MAX_SCRAPE_TIMEOUT = timedelta(seconds=10)
_LOG_TAIL_CHARS = 3000

_running: set[PrometheusServer] = set()
_running_lock = threading.Lock()


class PrometheusNotInstalledError(RuntimeError):
    """The ``prometheus`` or ``promtool`` binary cannot be found."""


class PrometheusStartError(RuntimeError):
    """Prometheus exited or did not become ready; the message carries its log tail."""


class BackfillError(RuntimeError):
    """promtool rejected the OpenMetrics input; the message carries its output."""


def find_binary(name: str) -> str:
    """The absolute path of ``name`` on PATH, or an error saying how to install it."""
    path = shutil.which(name)
    if path is None:
        raise PrometheusNotInstalledError(f"`{name}` was not found on PATH. {INSTALL_HINT}")
    return path


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_duration(value: str | float | timedelta) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    return parse_duration(value)


class PrometheusServer:
    """One Prometheus process with its own temporary TSDB and configuration.

    Use as a context manager, or call ``start()`` and ``stop()``::

        with PrometheusServer(scrape_targets=["127.0.0.1:9100"], scrape_interval="1s") as prom:
            print(prom.url)
    """

    def __init__(
        self,
        *,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str | float | timedelta = "1s",
        port: int | None = None,
        metrics_path: str = "/metrics",
        job_name: str = DEFAULT_JOB_NAME,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        work_dir: str | Path | None = None,
    ) -> None:
        self._prometheus = find_binary("prometheus")
        self._scrape_targets = list(scrape_targets)
        self._scrape_interval = _as_duration(scrape_interval)
        if self._scrape_interval <= timedelta(0):
            raise ValueError("scrape_interval must be positive")
        self._fixed_port = port
        self.port = port or 0
        self._metrics_path = metrics_path
        self._job_name = job_name
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._owns_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="canaryd-prometheus-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.tsdb_dir = self.work_dir / "tsdb"
        self.tsdb_dir.mkdir(exist_ok=True)
        self.config_file = self.work_dir / "prometheus.yml"
        self.log_file = self.work_dir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False

    # -- addresses -------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:41234``."""
        if not self.port:
            raise RuntimeError("Prometheus has not been started yet, so it has no port")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def scrape_targets(self) -> list[str]:
        return list(self._scrape_targets)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> PrometheusServer:
        """Start Prometheus and wait until ``/-/ready`` answers 200."""
        if self._closed:
            raise RuntimeError("this PrometheusServer was closed; create a new one")
        if self.running:
            return self
        self._write_config()
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if not self._fixed_port and (attempt or not self.port):
                self.port = free_loopback_port()
            try:
                self._spawn_and_wait()
                return self
            except PrometheusStartError as error:
                # Another process may have taken the free port between our check and the bind.
                if "address already in use" in str(error) and attempt + 1 < attempts:
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the process by its PID: SIGTERM, wait, then SIGKILL if it lingers."""
        process, self._process = self._process, None
        with _running_lock:
            _running.discard(self)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self._stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=self._stop_timeout)

    def restart(self) -> None:
        """Stop and start again on the same port with the same TSDB."""
        port = self.port
        self.stop()
        self._fixed_port = self._fixed_port or port
        self.start()

    def close(self) -> None:
        """Stop the process and delete the temporary directory (when this object created it)."""
        self.stop()
        self._closed = True
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- data ------------------------------------------------------------------------------------------------

    def backfill(self, openmetrics_text: str) -> None:
        """Write OpenMetrics samples (with timestamps in seconds) as TSDB blocks.

        A ``# EOF`` line is appended when missing. On a running server this
        restarts Prometheus on the same port so the new blocks are queryable
        as soon as this returns.
        """
        promtool = find_binary("promtool")
        text = openmetrics_text.rstrip("\n") + "\n"
        if not text.rstrip().endswith("# EOF"):
            text += "# EOF\n"
        was_running = self.running
        if was_running:
            self.stop()
        with tempfile.NamedTemporaryFile(
            "w", suffix=".om", dir=self.work_dir, delete=False, encoding="utf-8"
        ) as handle:
            handle.write(text)
            input_file = handle.name
        try:
            result = subprocess.run(
                [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", input_file,
                 str(self.tsdb_dir)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            os.unlink(input_file)
        if result.returncode != 0:
            raise BackfillError(
                f"promtool could not backfill the OpenMetrics input (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        if was_running:
            self.restart()

    def query(self, promql: str, at: float | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Run an instant query and return the decoded ``data`` object (for tests and diagnostics)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = repr(float(at))
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"query {promql!r} failed: HTTP {error.code} {error.read()!r}") from error
        data: dict[str, Any] = body["data"]
        return data

    def wait_for_series(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until ``promql`` returns a non-empty result (e.g. the first scrapes have landed)."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql).get("result") or []
            if result:
                return list(result)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no series for {promql!r} after {timeout:.0f}s at {self.url}")
            time.sleep(0.2)

    # -- internals -------------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        interval = format_duration(self._scrape_interval)
        timeout = format_duration(min(self._scrape_interval, _MAX_SCRAPE_TIMEOUT))
        lines = [
            "# Written by canaryd.sandbox.prometheus_server; regenerated on every start.",
            "global:",
            f"  scrape_interval: {interval}",
            f"  scrape_timeout: {timeout}",
            f"  evaluation_interval: {interval}",
        ]
        if self._scrape_targets:
            lines += [
                "scrape_configs:",
                f"  - job_name: {json.dumps(self._job_name)}",
                f"    metrics_path: {json.dumps(self._metrics_path)}",
                f"    scrape_interval: {interval}",
                f"    scrape_timeout: {timeout}",
                "    static_configs:",
                f"      - targets: {json.dumps(self._scrape_targets)}",
            ]
        self.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _spawn_and_wait(self) -> None:
        args = [
            self._prometheus,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.tsdb_dir}",
            "--storage.tsdb.retention.time=100y",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.work_dir
            )
        self._process = process
        with _running_lock:
            _running.add(self)
        deadline = time.monotonic() + self._startup_timeout
        ready_url = f"http://127.0.0.1:{self.port}/-/ready"
        while True:
            if process.poll() is not None:
                self._process = None
                with _running_lock:
                    _running.discard(self)
                raise PrometheusStartError(
                    f"prometheus exited with code {process.returncode} before it was ready; "
                    f"log tail:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(ready_url, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise PrometheusStartError(
                    f"prometheus did not become ready within {self._startup_timeout:.0f}s on "
                    f"127.0.0.1:{self.port}; log tail:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-_LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"


@atexit.register
def _stop_leftovers() -> None:
    with _running_lock:
        leftovers = list(_running)
    for server in leftovers:
        server.stop()


__all__ = [
    "INSTALL_HINT",
    "BackfillError",
    "PrometheusNotInstalledError",
    "PrometheusServer",
    "PrometheusStartError",
    "find_binary",
    "free_loopback_port",
]
