"""The orphan guard: a process killed outright leaves none of its guarded children running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]

# A stand-in for the service: a long-running child (the engine), guarded, then waiting to be killed.
STAND_IN = textwrap.dedent("""
    import subprocess, sys, time
    from service.orphan_guard import OrphanGuard
    from service.orphan_guard import children
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    before = children()  # started before "the engine": not guarded
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    guard = OrphanGuard.watch_children(started_before=before) if sys.argv[1] == "guarded" else None
    print(child.pid, guard.pid if guard else 0, bystander.pid, flush=True)
    time.sleep(600)
""")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _kill_minus_nine(mode: str, wait_s: float) -> tuple[int, bool]:
    """Start the stand-in, kill -9 it, and say whether its child still runs ``wait_s`` later."""
    stand_in = subprocess.Popen([sys.executable, "-c", STAND_IN, mode], cwd=REPO, stdout=subprocess.PIPE,
                                text=True)
    assert stand_in.stdout is not None
    child, guard, bystander = (int(pid) for pid in stand_in.stdout.readline().split())
    assert _running(child)
    os.kill(stand_in.pid, signal.SIGKILL)
    stand_in.wait()
    deadline = time.monotonic() + wait_s
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _running(child)
    assert _running(bystander), "a process the guard was not given was killed"
    os.kill(bystander, signal.SIGKILL)
    if alive:
        os.kill(child, signal.SIGKILL)
    if guard:
        deadline = time.monotonic() + wait_s
        while _running(guard) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(guard), "the guard outlived its job"
    return child, alive


def test_a_guarded_child_dies_with_the_process_that_was_killed():
    _, alive = _kill_minus_nine("guarded", wait_s=10)
    assert not alive


def test_without_the_guard_the_child_would_live_on():
    # What the guard is for: otherwise the child is an orphan (and this test shows the check can fail).
    _, alive = _kill_minus_nine("unguarded", wait_s=1)
    assert alive


def test_the_guard_leaves_alone_a_pid_that_now_belongs_to_another_process():
    from service.orphan_guard import kill_guarded, start_ticks

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = start_ticks(other.pid)
        assert started is not None
        assert kill_guarded([[other.pid, started - 100]]) == []
        assert _running(other.pid)
        assert kill_guarded([[other.pid, started]]) == [other.pid]
        other.wait(timeout=5)
    finally:
        other.kill()


def test_the_guard_takes_processes_started_later_and_survives_a_line_cut_short(monkeypatch):
    import io

    from service import orphan_guard

    killed: list[list[list[int]]] = []
    monkeypatch.setattr(orphan_guard, "kill_guarded", killed.append)
    orphan_guard.main(io.BytesIO(b'[[11, 5]]\n[[12, 6], [13, 7]]\n[[14, 8\n'))  # the service died mid-line
    assert killed == [[[11, 5], [12, 6], [13, 7]]]
