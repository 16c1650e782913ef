"""bench/embedding_baseline.py's classifiers, on synthetic embeddings."""

import numpy as np

from bench.embedding_baseline import classifiers


def test_both_classifiers_answer_every_test_item_and_the_head_has_a_pool_estimate():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    gold = rng.integers(0, 3, 120)
    vectors = centres[gold] + 0.3 * rng.normal(size=(120, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    inputs = [{"text": f"example {i}"} for i in range(90)]
    found = classifiers(vectors[:90], gold[:90], vectors[90:], 3, inputs, ("text",), seed=0)
    for name in ("linear_cv", "head"):
        assert len(found[name]) == 30 and (np.asarray(found[name]) == gold[90:]).mean() > 0.9
    assert 0.9 < found["head_estimate"] <= 1.0 and found["linear_cv_C"] > 0
