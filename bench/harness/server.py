"""A service for a benchmark to talk to: a running one (``--url``), or an ``iclserve serve`` of the benchmark's
own on a free port, a temporary data directory and an admin key of its own (emptying the prefix cache needs
one), on the real engine or the fake one (``ICL_ENGINE=fake``: no model, for trying a benchmark out)."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from bench.harness import REPO
from bench.harness.datasets import Dataset, task_name
from iclclient import Client, ServiceTimeout, ServiceUnreachable
from iclclient.types import Job

START_TIMEOUT_S = 600.0  # a real engine on two busy cores
STOP_TIMEOUT_S = 120.0
UPLOAD_CHUNK = 5000  # examples per request


@dataclass
class Service:
    """Where a benchmark sends its requests; ``process`` is set when the benchmark started the service."""

    url: str
    admin_key: str | None = None
    process: subprocess.Popen[bytes] | None = None
    data_dir: Path | None = None

    def client(self, timeout: float = 3600.0, api_key: str | None = None) -> Client:
        return Client(self.url, api_key, timeout=timeout, admin_key=self.admin_key)

    def reset_prefix_cache(self) -> None:
        """Empty the engine's prefix cache, so that a timing does not start from the last one's prompts."""
        with self.client(timeout=120) as client:
            client.reset_prefix_cache()

    @property
    def log(self) -> Path | None:
        return self.data_dir / "server.log" if self.data_dir else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: Path, env: dict[str, str], timeout_s: float = START_TIMEOUT_S) -> Service:
    """``iclserve serve`` on ``data_dir`` with ``env`` over this process's environment, once healthy."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    service = Service(f"http://127.0.0.1:{port}", env.get("ICL_ADMIN_KEYS"), data_dir=data_dir)
    with open(data_dir / "server.log", "ab") as log:
        service.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
    deadline = time.monotonic() + timeout_s
    with Client(service.url, timeout=5) as client:
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise SystemExit(f"the server exited at start; see {service.log}")
            try:
                if client.health():
                    return service
            except (ServiceUnreachable, ServiceTimeout, httpx.HTTPError):  # still starting, or a slow loop
                pass
            time.sleep(0.25)
    stop(service)
    raise SystemExit(f"the server did not become healthy in {timeout_s:.0f} s; see {service.log}")


def stop(service: Service, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Terminate a started service and wait for it (killed if it will not go)."""
    process = service.process
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


@contextmanager
def served(url: str | None = None, *, engine: str | None = None, data_dir: Path | None = None,
           model: str | None = None, auto_fit: bool = True, env: dict[str, str] | None = None) -> Iterator[Service]:
    """The service at ``url``; or, without one, an ``iclserve serve`` for the block: on ``data_dir`` (default: a
    temporary directory), on ``engine`` ("vllm" or "fake"; default: the environment's), serving ``model`` (a
    local model folder), fitting tasks by itself unless ``auto_fit`` is off (a benchmark that fits when it
    chooses), with ``env``'s settings last."""
    if url is not None:
        # A running service: emptying its prefix cache takes one of its ICL_ADMIN_KEYS, given as ICL_ADMIN_KEY.
        yield Service(url, os.environ.get("ICL_ADMIN_KEY"))
        return
    settings = {"ICL_ADMIN_KEYS": secrets.token_hex(16), "ICL_AUTO_FIT": str(auto_fit).lower(),
                **({"ICL_ENGINE": engine} if engine else {}), **({"ICL_MODEL": model} if model else {}), **(env or {})}
    service = start(data_dir or Path(tempfile.mkdtemp(prefix="iclbench-")), settings)
    # A benchmark stopped with SIGTERM (kill, a job runner's timeout) unwinds as on Ctrl-C, so that its service
    # and engine are stopped too rather than left running.
    terminate = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_term)
    try:
        yield service
    finally:
        stop(service)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, terminate)


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def add_server_arguments(parser: argparse.ArgumentParser, url: bool = True, engine: bool = True) -> None:
    """The options an HTTP benchmark takes to pick its service (``url``, ``engine``: whether it can use a running
    service, or the fake engine)."""
    if url:
        parser.add_argument("--url", help="a running service (its admin key, for emptying the prefix cache, in "
                                          "ICL_ADMIN_KEY); default: start one")
    if engine:
        parser.add_argument("--engine", choices=["vllm", "fake"],
                            help="the started service's engine (default: ICL_ENGINE, else vllm); fake: no model, "
                                 "for trying the benchmark out")
    parser.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more settings of the started service (ICL_*, VLLM_CPU_*)")


def server_env(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments as a mapping."""
    bad = [pair for pair in pairs if "=" not in pair]
    if bad:
        raise SystemExit(f"--server-env takes KEY=VALUE, not {bad[0]!r}")
    return dict(pair.split("=", 1) for pair in pairs)


@contextmanager
def served_from(args: argparse.Namespace, *, data_dir: Path | None = None, model: str | None = None,
                auto_fit: bool = True, env: dict[str, str] | None = None) -> Iterator[Service]:
    """``served`` as ``add_server_arguments``'s options ask, with the benchmark's own settings."""
    settings = {**server_env(getattr(args, "server_env", [])), **(env or {})}
    with served(getattr(args, "url", None), engine=getattr(args, "engine", None), data_dir=data_dir, model=model,
                auto_fit=auto_fit, env=settings) as service:
        yield service


def fresh_task(client: Client, name: str, labels: list[str], template: str, examples: list[dict],
               chunk: int = UPLOAD_CHUNK) -> None:
    """Task ``name`` created anew (one of that name deleted first) with ``examples`` as its labeled pool."""
    if name in {t["name"] for t in client.list_tasks()}:
        client.delete_task(name)
    client.create_task(name, labels, template)
    for begin in range(0, len(examples), chunk):
        client.add_examples(name, examples[begin:begin + chunk])


def dataset_task(client: Client, data: Dataset, pool: list[dict], name: str | None = None) -> str:
    """``data``'s task created anew (default name: ``task_name``) with ``pool``'s rows as its labeled pool."""
    name = name or task_name(data.name)
    fresh_task(client, name, data.labels, data.template, data.examples(pool))
    return name


def automatic_fit(client: Client, name: str, poll_s: float = 2.0) -> tuple[Job, str]:
    """The fit job that an upload to task ``name`` started by itself (``ICL_AUTO_FIT``), waited for; where none
    started (a ``--url`` service with automatic fits off), the same fit asked for with an empty body. The finished
    job, and what started it: "upload" or "request"."""
    task = client.get_task(name)
    job_id = task["fit"]["job_id"] or _fit_job_since(client, name, task["created_at"])
    started_by = "upload"
    if job_id is None:
        job_id, started_by = client.train_controller(name), "request"
    return client.wait_for_job(job_id, poll_s=poll_s), started_by


def _fit_job_since(client: Client, name: str, since: str) -> str | None:
    """The newest fit job of task ``name`` submitted since ``since`` (a deleted task of that name left older
    ones): one that ended before its task could be read."""
    for job in client.list_jobs(task=name, kind="controller", limit=5)["jobs"]:
        if job.get("created_at") and datetime.fromisoformat(job["created_at"]) >= datetime.fromisoformat(since):
            return job["job_id"]
    return None
