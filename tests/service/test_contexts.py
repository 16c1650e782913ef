"""Task contexts: one cheap read per request, the pool reloaded when its version moves on (with a fresh bias
cache), the controller when a new one is fitted, nothing else."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from controller.meta import MetaController
from controller.training import TaskFit
from service.contexts import ContextCache
from service.errors import APIError
from service.store import NewExample, Store
from tests.fakes import FakeEmbedder, FakeScorer


def _examples(texts, label="a"):
    vectors = FakeEmbedder().embed(texts)
    return [NewExample(id=None, input={"text": t}, label=label, embedding=v)
            for t, v in zip(texts, vectors, strict=True)]


class CountingStore(Store):
    def __init__(self, url):
        super().__init__(url)
        self.loads = {"pool": 0, "controller": 0, "task": 0}

    def load_pool(self, task_id):
        self.loads["pool"] += 1
        return super().load_pool(task_id)

    def load_controller(self, task_id):
        self.loads["controller"] += 1
        return super().load_controller(task_id)

    def get_task(self, name):
        self.loads["task"] += 1
        return super().get_task(name)


@pytest.fixture
def store(tmp_path):
    store = CountingStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield store
    store.close()


def _task(store, name="t"):
    task = store.create_task(name, ["a", "b"], {"a": "a", "b": "b"}, "X: {text}\nY: {label}", None, "\n\n", None)
    store.add_examples(task.id, _examples(["one film", "two films"]))
    return task


def _controller() -> bytes:
    rng = np.random.default_rng(0)
    return pickle.dumps(MetaController(candidate_k=(0, 1), embedding_dims=None).fit(
        rng.normal(size=(20, 70)), np.tile([[0, 1], [1, 1]], (10, 1))))


def test_a_current_context_costs_one_read(store):
    task, scorer = _task(store), FakeScorer()
    contexts = ContextCache(store, default_k=4)
    first = contexts.get("t", scorer)
    assert len(first.pool.labeled) == 2 and first.controller is None and first.default_k == 4
    for _ in range(5):
        assert contexts.get("t", scorer) is first
    assert store.loads == {"pool": 1, "controller": 1, "task": 1}
    with pytest.raises(APIError) as info:
        contexts.get("missing", scorer)
    assert info.value.status == 404 and info.value.code == "task_not_found"
    assert task.id == first.task.id


def test_new_examples_reload_the_pool_and_its_bias_cache_but_not_the_controller(store):
    task, scorer = _task(store), FakeScorer()
    store.save_controller(task.id, _controller(), {})
    contexts = ContextCache(store, default_k=4)
    first = contexts.get("t", scorer)
    assert isinstance(first.controller, MetaController)
    first.pool.biases.put(("key",), np.ones(2))
    store.add_examples(task.id, _examples(["three films"], label="b"))
    second = contexts.get("t", scorer)
    assert len(second.pool.labeled) == 3 and len(second.pool.biases) == 0  # rows are the cache's keys
    assert second.controller is first.controller
    assert store.loads == {"pool": 2, "controller": 1, "task": 1}


def test_a_new_fit_reloads_the_controller_and_keeps_the_pool(store):
    task, scorer = _task(store), FakeScorer()
    contexts = ContextCache(store, default_k=4)
    first = contexts.get("t", scorer)
    store.save_controller(task.id, _controller(), {})
    second = contexts.get("t", scorer)
    assert isinstance(second.controller, MetaController) and second.pool is first.pool
    store.delete_controller(task.id)
    assert contexts.get("t", scorer).controller is None
    assert store.loads["pool"] == 1 and store.loads["controller"] == 3


def test_a_recreated_task_gets_a_context_of_its_own(store):
    _task(store)
    scorer = FakeScorer()
    contexts = ContextCache(store, default_k=4)
    old = contexts.get("t", scorer)
    store.delete_task("t")
    with pytest.raises(APIError):
        contexts.get("t", scorer)
    store.create_task("t", ["x", "y"], {"x": "x", "y": "y"}, "X: {text}\nY: {label}", None, "\n\n", 2)
    new = contexts.get("t", scorer)
    assert new.task.labels == ["x", "y"] and new.default_k == 2 and len(new.pool.labeled) == 0
    assert new.pool is not old.pool


def test_concurrent_requests_after_a_change_reload_once(store):
    import threading

    task, scorer = _task(store), FakeScorer()
    contexts = ContextCache(store, default_k=4)
    contexts.get("t", scorer)
    store.add_examples(task.id, _examples(["three films"]))
    seen, start = [], threading.Barrier(8)

    def request():
        start.wait()
        seen.append(contexts.get("t", scorer))

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.loads["pool"] == 2  # the first load, and one reload for eight requests
    assert all(context is seen[0] for context in seen) and len(seen[0].pool.labeled) == 3


def test_the_least_recently_used_task_is_dropped(store):
    scorer = FakeScorer()
    for name in ("a", "b", "c"):
        _task(store, name)
    contexts = ContextCache(store, default_k=4, max_tasks=2)
    contexts.get("a", scorer)
    contexts.get("b", scorer)
    contexts.get("a", scorer)  # a is used again: b is now the oldest
    contexts.get("c", scorer)
    loads = store.loads["pool"]
    contexts.get("a", scorer)
    assert store.loads["pool"] == loads
    contexts.get("b", scorer)
    assert store.loads["pool"] == loads + 1


def test_a_controller_that_cannot_be_read_leaves_the_default_count(store, caplog):
    task, scorer = _task(store), FakeScorer()
    store.save_controller(task.id, b"not a pickle", {})
    contexts = ContextCache(store, default_k=4)
    context = contexts.get("t", scorer)
    assert context.controller is None and "cannot be loaded" in caplog.text
    assert contexts.get("t", scorer) is context  # not retried on every request; a refit is read again
    store.save_controller(task.id, _controller(), {})
    assert isinstance(contexts.get("t", scorer).controller, MetaController)


def test_a_fit_of_another_model_is_not_served(store, caplog):
    task, scorer = _task(store), FakeScorer()
    controller = pickle.loads(_controller())
    store.save_controller(task.id, pickle.dumps(TaskFit(controller, None, model="another-model")), {})
    contexts = ContextCache(store, default_k=4)
    assert contexts.get("t", scorer).fit is None and "another-model" in caplog.text
    store.save_controller(task.id, pickle.dumps(TaskFit(controller, None, model=scorer.model_name)), {})
    assert contexts.get("t", scorer).controller is not None


def test_the_default_never_draws_domain_words_from_recent_queries(store):
    from controller.predictor import PredictOptions

    _task(store)
    contexts = ContextCache(store, default_k=4, recent_queries=8)
    context = contexts.get("t", FakeScorer())
    context.pool.remember([{"text": "recent query words"}])
    auto = context.predictor(PredictOptions(calibration="auto", selection="random")).calibrator
    domain = context.predictor(PredictOptions(calibration="domain", selection="random")).calibrator
    assert auto.unfitted.words is context.pool.domain_words
    assert "recent" in domain.words.words["text"] and "recent" not in auto.unfitted.words.words["text"]
