"""Where a server's time goes: py-spy attached to the server and its child processes (``--subprocesses``), its
collapsed stacks broken down by process and activity (event loop, planning threads, vLLM's engine core and its
model worker). py-spy is not a dependency: install it where you profile."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path


class Profiler:
    """py-spy recording ``pid`` and its children as collapsed stacks to ``out``, until ``stop`` (SIGINT)."""

    def __init__(self, pid: int, out: Path, rate: int) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.with_suffix(".log").open("w") as log:
            self.proc = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--subprocesses", "--format", "raw",
                                          "--rate", str(rate), "--output", str(out), "--nonblocking"],
                                         stdout=subprocess.DEVNULL, stderr=log)
        time.sleep(2.0)  # attach before the work starts

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def profile_category(stack: str) -> str:
    """Where a py-spy stack of the server was: its process, then what it was doing."""
    frames = stack.split(";")
    process = [f for f in frames if f.startswith("process ")][-1]
    has = lambda *needles: any(n in stack for n in needles)  # noqa: E731
    if "VLLM::Worker" in process:
        if has("_model_forward", "compute_logits", "onednn_mm"):
            return "engine worker: model forward (and logits)"
        if not has("execute_model") and has("sched_yield", "acquire_read", "MessageQueue.dequeue"):
            return "engine worker: spin-waiting for work (sched_yield)"
        return "engine worker: other (inputs, sampling, logprobs)"
    if "VLLM::EngineCore" in process:
        if has("_wait_for_response"):
            return "engine core: spin-waiting for the worker (sched_yield)"
        if has("Scheduler.schedule", "Scheduler.update_from_output"):
            return "engine core: scheduler"
        return "engine core: other (requests, outputs, ZMQ)"
    if has("Thread._bootstrap"):  # the API process's worker threads: planning
        return _planning_category(has)
    if frames[-1].startswith("Runner.run "):
        return "API event loop: loop itself (uvloop, callbacks)"
    if has("vllm/"):
        return "API event loop: vLLM client (add_request, output handler)"
    if has("service/serving", "service/engine", "service/routes", "controller/"):
        return "API event loop: service code (scoring calls, response)"
    if has("uvicorn", "starlette", "fastapi", "pydantic", "httptools", "json"):
        return "API event loop: HTTP, FastAPI, pydantic"
    return "API event loop: loop itself (uvloop, callbacks)"


def _planning_category(has: Callable[..., bool]) -> str:
    if has("SentenceEmbedder.embed"):
        return "API planning thread: embedder"
    if has("ContextCache.get", "task_versions"):
        return "API planning thread: task context (store read)"
    if has("tokenize", "_encode_plus"):
        return "API planning thread: tokenize"
    if has("Predictor.plan", "controller/"):
        return "API planning thread: retrieval, prompts"
    return "API planning thread: other"


def read_stacks(path: Path) -> Counter[str]:
    """A py-spy raw profile: samples per collapsed stack."""
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def summarise_profile(path: Path, top: int) -> dict[str, float]:
    """A profile broken down by ``profile_category`` (shares of all samples: at 100 Hz, 100 samples are about one
    CPU-second of a Python thread), then the top self and inclusive frames; printed, and the shares returned."""
    stacks = read_stacks(path)
    total = sum(stacks.values())
    categories: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        categories[profile_category(stack)] += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            if not frame.startswith("process "):
                inclusive[frame] += count
    print(f"{path}: {total} samples")
    for title, items in (("by category", sorted(categories.items())), ("self", self_time.most_common(top)),
                         ("inclusive", inclusive.most_common(top))):
        print(f"\n{title}:")
        for name, count in items:
            print(f"  {100 * count / total:5.1f}%  {name}")
    return {name: count / total for name, count in categories.items()}
