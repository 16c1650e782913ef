"""Count policies: a fixed count, or the meta-controller's per-input choice priced in each input's tokens."""

import numpy as np
import pytest

from controller.cascade import HEAD_STAGE, HIDDEN_STAGE, NEVER, Cascade
from controller.counts import ChosenCounts, ControllerCount, FixedCount, QueryBatch, TaskDefaults, count_policy
from controller.errors import BudgetTooSmallError
from controller.features import features_for
from controller.meta import MetaController
from controller.retrieval import KnnRetriever, RandomRetriever, pool_similarities
from tests.fakes import fake_builder

LABELS = ["positive", "negative"]
TEXTS = [f"{w} film number {i}" for i, w in enumerate(["great", "awful", "fun", "boring"] * 4)]
POOL_LABELS = [LABELS[i % 2] for i in range(len(TEXTS))]


def _batch(builder, embedder, texts, seed=0):
    queries = [{"text": t} for t in texts]
    vectors = embedder.embed(texts)
    return QueryBatch(queries, vectors, pool_similarities(vectors, builder.pool.embeddings, len(texts)),
                      [seed] * len(texts))


def _controller(builder, embedder):
    """Right without demonstrations on inputs that say "easy", only with two on those that say "hard"."""
    texts = [f"{'easy' if i % 2 else 'hard'} case {i} film" for i in range(60)]
    batch = _batch(builder, embedder, texts)
    X = features_for(builder, LABELS, batch.queries, batch.embeddings, batch.similarities)
    Y = np.stack([np.arange(60) % 2, np.ones(60)], axis=1).astype(int)
    return MetaController(candidate_k=(0, 2), embedding_dims=None, tolerance=0.2).fit(X, Y)


def test_fixed_count_retrieves_that_many_for_everyone():
    builder, _, embedder = fake_builder(TEXTS, POOL_LABELS)
    batch = _batch(builder, embedder, ["great film", "awful film"])
    rows = FixedCount(3).demo_rows(builder, KnnRetriever(), batch, None)
    assert [len(r) for r in rows] == [3, 3]
    assert rows[0] == KnnRetriever().select(batch.similarities[0], builder.pool.embeddings, 3)
    assert FixedCount(3).needs_embeddings(KnnRetriever()) and not FixedCount(0).needs_embeddings(KnnRetriever())
    assert not FixedCount(3).needs_embeddings(RandomRetriever())


def test_controller_gives_each_input_the_count_it_needs_and_spends_a_budget():
    builder, _, embedder = fake_builder(TEXTS, POOL_LABELS)
    policy = ControllerCount(_controller(builder, embedder), LABELS)
    assert policy.needs_embeddings(RandomRetriever())  # its features read the embeddings
    batch = _batch(builder, embedder, ["easy case again film", "hard case again film"])
    rows = policy.demo_rows(builder, KnnRetriever(), batch, None)
    assert [len(r) for r in rows] == [0, 2]
    assert rows[1] == KnnRetriever().select(batch.similarities[1], builder.pool.embeddings, 2)
    zero_shot = [builder.zero_shot_tokens(q) for q in batch.queries]
    _, costs = policy.priced_options(builder, KnnRetriever(), batch, zero_shot)
    assert costs.shape == (2, 2) and (costs[:, 1] > costs[:, 0]).all()
    # A budget of the zero-shot prompts alone: nobody gets demonstrations; less than that is refused.
    assert [len(r) for r in policy.demo_rows(builder, KnnRetriever(), batch, int(costs[:, 0].sum()))] == [0, 0]
    with pytest.raises(BudgetTooSmallError):
        policy.demo_rows(builder, KnnRetriever(), batch, int(costs[:, 0].sum()) - 1)


def test_auto_uses_a_fit_only_when_there_is_one_and_a_pool():
    builder, _, embedder = fake_builder(TEXTS, POOL_LABELS)
    controller = _controller(builder, embedder)
    cascade = Cascade((0, 4), (0.3,))
    by_cascade, by_controller = TaskDefaults(4, "cascade"), TaskDefaults(4, "controller")
    for defaults in (by_cascade, by_controller):
        assert count_policy("auto", defaults, None, None, LABELS, 16) == ChosenCounts(FixedCount(4), None, "default")
        assert count_policy(2, defaults, controller, cascade, LABELS, 16) == ChosenCounts(FixedCount(2), None,
                                                                                          "fixed")
        assert count_policy("auto", defaults, controller, cascade, LABELS, 0).name == "default"
    chosen = count_policy("auto", by_controller, controller, cascade, LABELS, 16)
    assert isinstance(chosen.counts, ControllerCount) and chosen.cascade is None and chosen.name == "controller"
    # The cascade starts at its first stage; one fitted without the other serves whichever there is.
    assert count_policy("auto", by_cascade, controller, cascade, LABELS, 16) == ChosenCounts(FixedCount(0), cascade,
                                                                                             "cascade")
    assert count_policy("auto", by_controller, None, cascade, LABELS, 16).name == "cascade"
    assert count_policy("auto", by_cascade, controller, None, LABELS, 16).name == "controller"
    # A one-stage cascade (no count sends anyone on) is that fixed count.
    assert count_policy("auto", by_cascade, controller, Cascade((2,), ()), LABELS, 16) == ChosenCounts(
        FixedCount(2), None, "cascade")


def test_a_cascade_that_starts_with_the_embedding_head_serves_the_counts_after_it():
    defaults = TaskDefaults(4)
    assert count_policy("auto", defaults, None, Cascade((HEAD_STAGE,), ()), LABELS, 16) == ChosenCounts(
        FixedCount(0), None, "cascade", NEVER)  # the head answers every input
    assert count_policy("auto", defaults, None, Cascade((HEAD_STAGE, 2), (0.4,)), LABELS, 16) == ChosenCounts(
        FixedCount(2), None, "cascade", 0.4)
    assert count_policy("auto", defaults, None, Cascade((HEAD_STAGE, 1, 4), (0.4, 0.2)), LABELS, 16) == ChosenCounts(
        FixedCount(1), Cascade((1, 4), (0.2,)), "cascade", 0.4)
    assert count_policy(2, defaults, None, Cascade((HEAD_STAGE, 2), (0.4,)), LABELS, 16).head_threshold is None


def test_a_cascade_of_the_hidden_state_head_alone_says_so():
    chosen = count_policy("auto", TaskDefaults(4), None, Cascade((HIDDEN_STAGE,), ()), LABELS, 16)
    assert chosen.hidden and chosen.head_threshold is None and chosen.name == "cascade"
    assert not count_policy(2, TaskDefaults(4), None, Cascade((HIDDEN_STAGE,), ()), LABELS, 16).hidden
    assert count_policy("auto", TaskDefaults(4), None, Cascade((HIDDEN_STAGE,), ()), LABELS, 0) == ChosenCounts(
        FixedCount(4), None, "default")  # no pool: nothing to read demonstrations from


def test_a_task_s_own_default_count_wins_over_the_service_s():
    assert TaskDefaults.resolve(None, 4) == TaskDefaults(4, "cascade")
    assert TaskDefaults.resolve(0, 4, "controller") == TaskDefaults(0, "controller")
    assert TaskDefaults.resolve(2, 4).default_k == 2
