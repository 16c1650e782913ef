"""The client against the app on the fake engine: the app's test client is the client's transport."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.state import Runtime
from tests.fakes import FakeEmbedder, FakeScorer


@pytest.fixture
def http(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=["secret"], admin_keys=["admin-secret"])
    with TestClient(create_app(settings, runtime=Runtime(scorer=FakeScorer(), embedder=FakeEmbedder()))) as c:
        yield c
