"""Fixtures of the HTTP tests: a client on the fake engine, and a task with examples in it."""

from __future__ import annotations

import sys

import pytest

from tests.service.support import EXAMPLES, TASK, make_client


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def task(client):
    assert client.post("/v1/tasks", json=TASK).status_code == 201
    assert client.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES}).status_code == 200
    return "sent"


def pytest_terminal_summary(terminalreporter) -> None:
    """The seed of a fuzz run that had one (FUZZ_SEED, FUZZ_RANDOM): what replays it."""
    seed = getattr(sys.modules.get("tests.service.test_openapi_fuzz"), "SEED", None)
    if seed is not None:
        terminalreporter.write_line(f"fuzz seed: {seed} (FUZZ_SEED={seed} replays this run)")
