"""Task contexts: one cheap read per request, the pool brought up to date in place when its version moves on
(with a fresh bias cache; reloaded whole when much changed), the controller when a new one is fitted, nothing
else."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
        self.changed_rows_read = 0

    def load_pool(self, task_id):
        self.loads["pool"] += 1
        return super().load_pool(task_id)

    def load_pool_changes(self, task_id, since, max_rows):
        changes = super().load_pool_changes(task_id, since, max_rows)
        self.changed_rows_read += len(changes.rows.ids) if changes is not None else 0
        return changes

    def load_fit(self, task_id):
        self.loads["controller"] += 1
        return super().load_fit(task_id)

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
    assert len(first.pool.labeled) == 2 and first.controller is None and first.defaults.default_k == 4
    for _ in range(5):
        assert contexts.get("t", scorer) is first
    assert store.loads == {"pool": 1, "controller": 1, "task": 1}
    with pytest.raises(APIError) as info:
        contexts.get("missing", scorer)
    assert info.value.status == 404 and info.value.code == "task_not_found"
    assert task.id == first.task.id


def test_new_examples_update_the_pool_in_place_with_a_fresh_bias_cache_and_keep_the_controller(store):
    task, scorer = _task(store), FakeScorer()
    store.save_fit(task.id, _controller(), {})
    contexts = ContextCache(store, default_k=4)
    first = contexts.get("t", scorer)
    assert isinstance(first.controller, MetaController)
    first.pool.biases.put(("key",), np.ones(2))
    store.add_examples(task.id, _examples(["three films"], label="b"))
    second = contexts.get("t", scorer)
    assert len(second.pool.labeled) == 3 and len(second.pool.biases) == 0  # rows are the cache's keys
    assert second.controller is first.controller
    assert store.loads == {"pool": 1, "controller": 1, "task": 1} and store.changed_rows_read == 1
    assert len(first.pool.labeled) == 2  # a view in use by a request is never changed


def test_a_new_fit_reloads_the_controller_and_keeps_the_pool(store):
    task, scorer = _task(store), FakeScorer()
    contexts = ContextCache(store, default_k=4)
    first = contexts.get("t", scorer)
    store.save_fit(task.id, _controller(), {})
    second = contexts.get("t", scorer)
    assert isinstance(second.controller, MetaController) and second.pool is first.pool
    store.delete_fit(task.id)
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
    assert new.task.labels == ["x", "y"] and new.defaults.default_k == 2 and len(new.pool.labeled) == 0
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
    assert store.loads["pool"] == 1 and store.changed_rows_read == 1  # one update for eight requests
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
    store.save_fit(task.id, b"not a pickle", {})
    contexts = ContextCache(store, default_k=4)
    context = contexts.get("t", scorer)
    assert context.controller is None and "cannot be loaded" in caplog.text
    assert contexts.get("t", scorer) is context  # not retried on every request; a refit is read again
    store.save_fit(task.id, _controller(), {})
    assert isinstance(contexts.get("t", scorer).controller, MetaController)


def test_a_fit_of_another_model_is_not_served(store, caplog):
    task, scorer = _task(store), FakeScorer()
    controller = pickle.loads(_controller())
    store.save_fit(task.id, pickle.dumps(TaskFit(controller, None, model="another-model")), {})
    contexts = ContextCache(store, default_k=4)
    assert contexts.get("t", scorer).fit is None and "another-model" in caplog.text
    store.save_fit(task.id, pickle.dumps(TaskFit(controller, None, model=scorer.model_name)), {})
    assert contexts.get("t", scorer).controller is not None


def test_the_context_resolves_the_task_s_defaults_once(store):
    from controller.counts import TaskDefaults

    _task(store)
    context = ContextCache(store, default_k=3, auto_policy="controller").get("t", FakeScorer())
    assert context.defaults == TaskDefaults(3, "controller")


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


def _fresh(store, name="t"):
    """The task's pool as a whole load makes it (through another store: the counts stay the cache's), for
    comparing with one updated in place."""
    other = Store(store.engine.url.render_as_string(hide_password=False))
    try:
        return ContextCache(other, default_k=4).get(name, FakeScorer()).pool
    finally:
        other.close()


def _assert_same_pool(updated, fresh):
    assert updated.version == fresh.version
    for got, want in ((updated.labeled, fresh.labeled),):
        assert list(got.ids) == list(want.ids) and list(got.inputs) == list(want.inputs)
        assert list(got.labels) == list(want.labels) and np.array_equal(got.keys, want.keys)
        assert got.embeddings.shape == want.embeddings.shape and np.array_equal(got.embeddings, want.embeddings)
    assert updated.inputs == fresh.inputs and updated.row_labels == fresh.row_labels
    assert np.array_equal(updated.row_ids, fresh.row_ids)
    assert updated.domain_words == fresh.domain_words
    # Token counts kept from earlier versions are those the pool's demonstrations have now.
    kept = dict(updated.builder._demo_tokens)
    assert all(fresh.builder.demo_tokens([row]) == cost for row, cost in kept.items())


def test_a_one_example_patch_reads_that_row_only(store):
    task, scorer = _task(store), FakeScorer()
    texts = [f"film number {i} was {'good' if i % 2 else 'bad'}" for i in range(200)]
    store.add_examples(task.id, [e if i % 3 else NewExample(e.id, e.input, None, e.embedding)
                                 for i, e in enumerate(_examples(texts))])
    contexts = ContextCache(store, default_k=4)
    before = contexts.get("t", scorer).pool
    before.builder.demo_tokens(range(len(before.labeled)))  # every demonstration's tokens measured
    ids = [e.id for e in store.list_examples(task.id, labeled=False, limit=10, offset=0)[0]]
    store.set_label(task.id, ids[5], "b")  # joins the labeled pool amid it
    after = contexts.get("t", scorer).pool
    assert store.loads["pool"] == 1 and store.changed_rows_read == 1
    assert len(after.labeled) == len(before.labeled) + 1 and ids[5] in after.labeled.ids
    assert len(after.builder._demo_tokens) == len(before.labeled)  # kept, each at its row's new place
    _assert_same_pool(after, _fresh(store))
    store.set_label(task.id, ids[5], None)  # and leaves it
    store.set_label(task.id, after.labeled.ids[0], "b")  # relabeled in place
    again = contexts.get("t", scorer).pool
    assert store.loads["pool"] == 1 and store.changed_rows_read == 3
    _assert_same_pool(again, _fresh(store))


def test_a_large_change_reloads_the_whole_pool(store):
    task, scorer = _task(store), FakeScorer()
    contexts = ContextCache(store, default_k=4)
    contexts.get("t", scorer)
    store.add_examples(task.id, _examples([f"film {i}" for i in range(5)]))  # more than half the pool
    pool = contexts.get("t", scorer).pool
    assert store.loads["pool"] == 2 and len(pool.labeled) == 7
    _assert_same_pool(pool, _fresh(store))


def test_rows_changed_without_a_version_reload_the_whole_pool(store):
    """A writer that does not stamp the rows it changes (one older than the stamps) is noticed by the counts."""
    from sqlalchemy import update

    from service.store import ExampleRow

    task, scorer = _task(store), FakeScorer()
    store.add_examples(task.id, _examples([f"film {i}" for i in range(20)]))
    contexts = ContextCache(store, default_k=4)
    contexts.get("t", scorer)
    store.add_examples(task.id, _examples(["one more film"]))
    with store.engine.begin() as connection:
        connection.execute(update(ExampleRow).where(ExampleRow.task_id == task.id).values(changed_version=0))
    pool = contexts.get("t", scorer).pool
    assert store.loads["pool"] == 2 and len(pool.labeled) == 23


# Each change, then whether a request looks at the pool before the next one (else one update takes several).
_ops = st.lists(st.tuples(st.one_of(
    st.tuples(st.just("add"), st.lists(st.sampled_from(["a", "b", None]), min_size=1, max_size=4)),
    st.tuples(st.just("label"), st.integers(0, 10_000), st.sampled_from(["a", "b", None])),
), st.booleans()), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_a_pool_updated_in_place_is_the_pool_a_whole_load_makes(tmp_path_factory, ops):
    store = CountingStore(f"sqlite:///{tmp_path_factory.mktemp('db') / 'db.sqlite'}")
    try:
        task, scorer = _task(store), FakeScorer()
        store.add_examples(task.id, _examples([f"seed film {i} words" for i in range(12)]))
        contexts = ContextCache(store, default_k=4)
        contexts.get("t", scorer).pool.builder.demo_tokens(range(14))
        counter = 0
        for i, (op, look) in enumerate(ops):
            if op[0] == "add":
                texts = [f"added film {counter + i} " + "word " * (i % 3) for i in range(len(op[1]))]
                counter += len(texts)
                store.add_examples(task.id, [NewExample(None, e.input, label, e.embedding)
                                             for e, label in zip(_examples(texts), op[1], strict=True)])
            else:
                every = store.list_examples(task.id, labeled=None, limit=10_000, offset=0)[0]
                store.set_label(task.id, every[op[1] % len(every)].id, op[2])
            if not look and i < len(ops) - 1:
                continue
            pool = contexts.get("t", scorer).pool
            pool.builder.demo_tokens(range(len(pool.labeled)))
            _assert_same_pool(pool, _fresh(store))
        assert store.loads["pool"] <= 1 + sum(op[0] == "add" for op, _ in ops)  # only large appends reload
    finally:
        store.close()


def test_the_approximate_index_follows_the_pool_in_place(store, monkeypatch):
    import threading
    import time

    from controller.ann import NeighbourIndex
    from controller.predictor import PredictOptions

    # The build waits for the test: a pool this small is indexed before a check could see it building.
    gate, build = threading.Event(), NeighbourIndex._build
    monkeypatch.setattr(NeighbourIndex, "_build", lambda self, *snapshot: (gate.wait(30), build(self, *snapshot)))

    task, scorer = _task(store), FakeScorer()
    texts = [f"film {i} " + " ".join(f"w{(i * j) % 97}" for j in range(6)) for i in range(150)]
    store.add_examples(task.id, [NewExample(e.id, e.input, None if i == 7 else "a", e.embedding)
                                 for i, e in enumerate(_examples(texts))])
    contexts = ContextCache(store, default_k=4, ann_min_pool=100, ann_candidates=16)
    pool = contexts.get("t", scorer).pool
    index = pool.labeled.index
    assert index is not None and index.similarities(pool.labeled.embeddings[:1], pool.labeled.keys,
                                                    pool.labeled.embeddings) is None  # building: exact meanwhile
    gate.set()
    deadline = time.monotonic() + 60
    while not index.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    assert index.ready and len(index) == len(pool.labeled) == 151
    row_id = store.list_examples(task.id, labeled=False, limit=1, offset=0)[0][0].id
    store.set_label(task.id, row_id, "b")  # joins the pool, and the index, in place
    context = contexts.get("t", scorer)
    assert store.loads["pool"] == 1 and context.pool.labeled.index is index and len(index) == 152
    query = {"text": texts[7]}
    predictor = context.predictor(PredictOptions(demos=1, selection="knn", calibration="none"))
    embeddings = FakeEmbedder().embed(predictor.embedding_texts([query]))
    plan = predictor.plan([query], embeddings)
    assert [context.pool.labeled.ids[r] for r in plan.prompts[0].demo_rows] == [row_id]
