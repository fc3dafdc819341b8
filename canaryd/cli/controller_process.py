"""`canaryd run` as a child process, as users and the install manifests run it.

The demo runs the real controller beside the sandbox without sharing its
event loop, and the end-to-end tests need a controller that a SIGKILL really
kills mid-run and that starts again from nothing but what is in the cluster.
Both start it here: the installed program's own entry point, against a
kubeconfig, health and metrics on free loopback ports, JSON logs into a file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class ControllerProcess:
    """One `canaryd run` child: start, stop gracefully (SIGTERM), or kill (SIGKILL)."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str],
        prometheus_url: str,
        log_path: Path,
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.command = [
            sys.executable, "-m", "canaryd.cli.main", "run",
            "--kubeconfig", str(kubeconfig),
            "--prometheus-url", prometheus_url,
            "--health-address", "127.0.0.1:0",
            "--metrics-address", "127.0.0.1:0",
            "--log-format", "json",
            *extra,
        ]  # fmt: skip
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no Lease release, writes cut wherever they are."""
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (the graceful path); SIGKILL if it does not exit in time."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of its log, for an error message."""
        return "\n".join(self.log().splitlines()[-lines:]) or "(no log)"
