"""The embedder is part of the pool: a service started with another embedder embeds every stored example
again before it serves, and the fits made on the old embeddings stop serving until they are fitted again."""

from __future__ import annotations

import time

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.reembedding import EMBEDDER_KEY, adopt_embedder
from service.state import Runtime
from service.store import Store
from tests.fakes import FakeEmbedder, FakeScorer
from tests.service.support import TASK

TEXTS = [f"{word} film number {i}" for i, word in enumerate(["great", "awful", "fun", "boring"] * 15)]


class ReversedEmbedder(FakeEmbedder):
    """Another embedder: the fake one's vectors, reversed."""

    identity = "reversed-fake:64"

    def embed(self, texts):
        return super().embed(texts)[:, ::-1].copy()


def _examples():
    return [{"id": f"e{i}", "input": text, "label": "positive" if i % 2 == 0 else "negative"}
            for i, text in enumerate(TEXTS)]


def _client(tmp_path, embedder, **overrides):
    settings = Settings(data_dir=tmp_path, **{"auto_fit": False, **overrides})
    return TestClient(create_app(settings, runtime=Runtime(scorer=FakeScorer(), embedder=embedder)))


def _stored_embeddings(tmp_path) -> np.ndarray:
    store = Store(Settings(data_dir=tmp_path).resolved_database_url)
    task = store.get_task("sent")
    return store.load_pool(task.id).embeddings


def test_another_embedder_embeds_every_example_again_and_refits_the_fits_it_made_stale(tmp_path):
    with _client(tmp_path, FakeEmbedder()) as c:
        c.post("/v1/tasks", json=TASK)
        assert c.post("/v1/tasks/sent/examples", json={"examples": _examples()}).status_code in (200, 201)
        started = c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 1], "train_size": 30})
        for _ in range(200):
            if c.get(f"/v1/jobs/{started.json()['job_id']}").json()["status"] == "succeeded":
                break
            time.sleep(0.05)
        controller = c.get("/v1/tasks/sent/controller").json()
        assert controller["metadata"]["embedder"] == FakeEmbedder.identity
        version = c.get("/v1/tasks/sent").json()["fit"]["pool_version"]
    before = _stored_embeddings(tmp_path)
    assert np.allclose(before, FakeEmbedder().embed(TEXTS))

    with _client(tmp_path, ReversedEmbedder()) as c:
        task = c.get("/v1/tasks/sent").json()
        assert task["fit"]["state"] == "other_model"  # its heads read the old embeddings
        predicted = c.post("/v1/tasks/sent/predict", json={"inputs": ["great film"]}).json()
        assert predicted["demos_policy"] == "default" and predicted["fit"] == "other_model"
        after = _stored_embeddings(tmp_path)
        assert np.allclose(after, ReversedEmbedder().embed(TEXTS)) and not np.allclose(after, before)
        assert Store(Settings(data_dir=tmp_path).resolved_database_url).setting(EMBEDDER_KEY) == \
            ReversedEmbedder.identity
        assert c.get("/v1/tasks/sent").json()["fit"]["pool_version"] == version  # the fit's, not the pool's

    with _client(tmp_path, ReversedEmbedder(), auto_fit=True, auto_fit_min_labeled=40) as c:
        for _ in range(400):  # due once the engine is ready: fitted again on the new embeddings
            if c.get("/v1/tasks/sent").json()["fit"]["state"] == "fitted":
                break
            time.sleep(0.05)
        assert c.get("/v1/tasks/sent/controller").json()["metadata"]["embedder"] == ReversedEmbedder.identity


def test_a_store_that_never_recorded_its_embedder_takes_the_serving_one_without_embedding_again(tmp_path):
    store = Store(Settings(data_dir=tmp_path).resolved_database_url)
    assert store.setting(EMBEDDER_KEY) is None
    assert adopt_embedder(store, FakeEmbedder()) == 0
    assert store.setting(EMBEDDER_KEY) == FakeEmbedder.identity
    assert adopt_embedder(store, FakeEmbedder()) == 0
