"""What the HTTP tests share: a task, its examples, a client on the fake engine, error checks."""

from __future__ import annotations

import json
import os

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.state import Runtime
from tests.fakes import FakeEmbedder, FakeScorer

TASK = {
    "name": "sent",
    "labels": ["negative", "positive"],
    "template": "Input: {text}\nLabel: {label}",
}
EXAMPLES = [
    {"id": "p1", "input": "great fun film", "label": "positive"},
    {"id": "n1", "input": "awful boring film", "label": "negative"},
    {"id": "p2", "input": {"text": "great acting"}, "label": "positive"},
    {"id": "n2", "input": "boring plot", "label": "negative"},
    {"id": "u1", "input": "some film"},
]


def make_client(tmp_path, **overrides) -> TestClient:
    settings = Settings(**{"data_dir": tmp_path, "max_inputs": 8, "max_input_chars": 200, **overrides})
    runtime = Runtime(scorer=FakeScorer(), embedder=FakeEmbedder())
    return TestClient(create_app(settings, runtime=runtime))


def post_json(client, url, body):
    """Post JSON as ASCII text with escapes, so that lone surrogates (\\udc00) reach the server as a client
    could send them."""
    return client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})


def assert_error(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


POSTGRES_URL = os.environ.get("ICL_TEST_POSTGRES_URL")


def empty_postgres() -> str:
    """The test PostgreSQL's URL with its tables dropped; skips the test where none is set (CI starts one)."""
    from sqlalchemy import text

    from service.store import Base, Store

    if not POSTGRES_URL:
        pytest.skip("ICL_TEST_POSTGRES_URL is not set (scripts/postgres-for-tests.sh starts a server)")
    store = Store(POSTGRES_URL)
    Base.metadata.drop_all(store.engine)
    with store.engine.begin() as connection:  # and the schema's revision: the next store makes it anew
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    store.close()
    return POSTGRES_URL
