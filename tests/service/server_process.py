"""The service as its own process on the fake engine (``ICL_ENGINE=fake``), for tests that kill it, restart
it or run two of it: no real engine starts, and jobs beat fast."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
# Fast, with room for a loop that two busy cores stall for a second or two.
FAST_JOBS = {"ICL_JOB_HEARTBEAT_S": "0.2", "ICL_JOB_STALE_AFTER_S": "4"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``iclserve serve`` on ``data_dir`` (and ``database_url``, if given) with the fake engine."""

    def __init__(self, data_dir: Path, database_url: str | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.env = {"ICL_ENGINE": "fake", "ICL_AUTO_FIT": "false", **FAST_JOBS, **env,
                    **({"ICL_DATABASE_URL": database_url} if database_url else {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, **env: str) -> ServerProcess:
        log = open(self.data_dir / f"server-{self.port}.log", "ab")  # noqa: SIM115
        environment = {**os.environ, **self.env, **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--data-dir",
             str(self.data_dir)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=environment)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited at start: {self.log()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"the service did not become healthy: {self.log()[-2000:]}")

    def log(self) -> str:
        return (self.data_dir / f"server-{self.port}.log").read_text(errors="replace")

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def kill(self) -> None:
        """kill -9, and wait until it is gone."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 30) -> int | None:
        return self.process.wait(timeout=timeout) if self.process is not None else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
