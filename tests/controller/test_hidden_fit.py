"""The hidden-state head: read in the fit on every labeled example's prompt, cross-fitted, tempered."""

import numpy as np

from controller.hidden_fit import demonstrations, fit_hidden_head
from controller.metrics import macro_f1
from tests.fakes import fake_builder

LABELS = ["positive", "negative"]


def _pool(n: int) -> tuple[list[str], list[str]]:
    words = {"positive": ["great", "fun", "lovely"], "negative": ["awful", "dull", "boring"]}
    texts, labels = [], []
    for i in range(n):
        label = LABELS[i % 2]
        texts.append(f"{words[label][i % 3]} film number{i} {words[label][(i + 1) % 3]}")
        labels.append(label)
    return texts, labels


def test_no_example_draws_a_demonstration_from_its_own_near_twin_group():
    embeddings = np.eye(6)[[0, 0, 1, 2, 2, 3]] + 0.01
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    groups = np.array([0, 0, 1, 2, 2, 3])
    rows = demonstrations(embeddings, groups, 2)
    for i, chosen in enumerate(rows):
        assert len(chosen) == 2 and all(groups[r] != groups[i] for r in chosen)
    assert demonstrations(embeddings, groups, 0) == [[]] * 6


async def test_the_fit_reads_each_example_once_and_its_evidence_is_cross_fitted_and_tempered():
    texts, labels = _pool(60)
    builder, scorer, _ = fake_builder(texts, labels, hidden=True)
    gold = np.array([LABELS.index(label) for label in labels])
    progress: list[float] = []
    fitted = await fit_hidden_head(builder, builder.pool.inputs, builder.pool.embeddings, gold, np.arange(60), 2,
                                   scorer, seed=0, count=1, progress=progress.append)
    assert len(scorer.hidden_calls) == 60 and progress[-1] == 1.0
    assert fitted.cross_fitted.shape == (60, 2) and np.allclose(fitted.cross_fitted.sum(axis=1), 1)
    assert fitted.prompt_tokens.tolist() == [len(call) for call in scorer.hidden_calls]
    assert macro_f1(gold, fitted.cross_fitted.argmax(axis=1), 2) > 0.9  # the query's words tell the label
    assert fitted.head.count == 1 and fitted.head.temperature > 0
    described = fitted.describe(2)
    assert described["examples"] == 60 and 0 <= described["ece"] <= 1 and described["count"] == 1
