"""Fixtures of the HTTP tests: a client on the fake engine, and a task with examples in it."""

from __future__ import annotations

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
