"""Engine processes do not outlive the service.

vLLM runs its engine in child processes (EngineCore and its workers). When the service is killed outright
(``kill -9``, the OOM killer), nothing in it runs, and those children would live on as orphans that keep
computing beside a restarted service. So once the engine has started, the service hands the list of its
child processes to a small guard process and keeps the write end of a pipe to it. Any death of the service
closes the pipe; the guard then kills the listed processes that still run (and their children) and exits.
On a normal shutdown the engine has already stopped and the guard finds nothing to kill.

Run as ``python -m service.orphan_guard``: each line on stdin is a JSON list of ``[pid, start_ticks]`` to
guard (the first at start; more when an engine starts later, as the hidden-state engine does on first use);
the guard then waits for end of input."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import IO

import psutil


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (/proc/PID/stat): unlike a wall-clock start time it
    does not move when the system clock is set, so it tells a guarded process from one that took its pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])  # the 22nd field; the split starts at the 3rd


def children() -> set[int]:
    """The pids of this process's children, recursively."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


class OrphanGuard:
    """The service's side: the guard process and the pipe whose closing sets it off."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def watch_children(cls, started_before: set[int] | None = None) -> OrphanGuard:
        """Guard this process's children (recursively), except those in ``started_before`` (pids taken before
        the engine started, which are not the engine's)."""
        guarded = _listed(children() - (started_before or set()))
        # Its own session: a terminal's Ctrl-C, or a kill of the service's process group, must not stop the
        # guard before it has done its job.
        process = subprocess.Popen([sys.executable, "-m", "service.orphan_guard"], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, start_new_session=True)
        assert process.stdin is not None
        process.stdin.write(json.dumps(guarded).encode() + b"\n")
        process.stdin.flush()
        return cls(process)

    def watch_new(self, started_before: set[int]) -> None:
        """Also guard the children started since ``started_before`` was taken (an engine started later)."""
        if self._process.stdin is None or self._process.stdin.closed:
            return
        self._process.stdin.write(json.dumps(_listed(children() - started_before)).encode() + b"\n")
        self._process.stdin.flush()

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self, timeout_s: float = 10.0) -> None:
        """The service stops: the guard kills what is left of the guarded processes and exits."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()


def _listed(pids: set[int]) -> list[list[int]]:
    return [[pid, ticks] for pid in sorted(pids) if (ticks := start_ticks(pid)) is not None]


def kill_guarded(guarded: list[list[int]], timeout_s: float = 5.0) -> list[int]:
    """Kill the guarded processes still running (the same processes: same pid and start) and their children;
    the pids killed."""
    victims: list[psutil.Process] = []
    for pid, ticks in guarded:
        if start_ticks(int(pid)) != ticks:
            continue  # ended; the pid may belong to another process now
        try:
            process = psutil.Process(int(pid))
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            victims += [process, *process.children(recursive=True)]
        except psutil.Error:
            continue
    for victim in victims:
        with contextlib.suppress(psutil.Error):
            victim.kill()
    psutil.wait_procs(victims, timeout=timeout_s)
    return [victim.pid for victim in victims]


def main(stdin: IO[bytes] | None = None) -> None:
    stream = stdin if stdin is not None else sys.stdin.buffer
    guarded: list[list[int]] = []
    for line in stream:  # until the service's end of the pipe closes, however the service ended
        try:
            guarded += json.loads(line) if line.strip() else []
        except ValueError:  # a line cut short: the service died while it wrote it
            continue
    kill_guarded(guarded)


if __name__ == "__main__":
    main()
