"""Training data and validation figures for the meta-controller.

Held-back labeled examples are classified at every candidate count, with demonstrations retrieved from the
rest of the pool; whether each answer was right is the controller's target."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from controller.features import features_for
from controller.meta import MetaController
from controller.planning import PromptBuilder
from controller.predictor import Predictor
from controller.retrieval import Selection, retriever_for
from controller.scoring import LabelScorer

MIN_TRAIN_SIZE = 20
VALIDATION_SHARE = 0.2


@dataclass(frozen=True)
class TrainingData:
    features: np.ndarray  # (n, n_features)
    correct: np.ndarray  # (n, K): 1 where the model was right with candidate_k[j] demonstrations
    prompt_tokens: np.ndarray  # (n, K)


async def collect(
    builder: PromptBuilder,
    queries: Sequence[dict[str, str]],
    embeddings: np.ndarray,
    gold: Sequence[str],
    labels: Sequence[str],
    candidate_k: Sequence[int],
    selection: Selection,
    seed: int,
    scorer: LabelScorer,
    progress: Callable[[float], None] = lambda _: None,
    chunk: int = 32,
) -> TrainingData:
    """Run the model at every candidate count on the held-back queries (uncalibrated, as served with
    ``calibration: none``; calibration rarely changes which counts are right).

    Random selection serves one seeded set of the whole pool, which training (whose pool lacks the held-back
    queries) cannot reproduce; each held-back query draws its own set instead, so the controller learns how
    random demonstrations do on average rather than how one set it will never serve does."""
    n, n_k = len(queries), len(candidate_k)
    seeds = [seed * n + i for i in range(n)] if retriever_for(selection).shares_one_set else [seed] * n
    correct = np.zeros((n, n_k), dtype=np.int64)
    tokens = np.zeros((n, n_k), dtype=np.int64)
    steps, done = n_k * ((n + chunk - 1) // chunk), 0
    for j, k in enumerate(candidate_k):
        predictor = Predictor.uncalibrated(builder, labels, selection, k, seed)
        async for part, predictions in predictor.predict_in_chunks(queries, embeddings, scorer, chunk, seeds):
            correct[part, j] = [p.label == g for p, g in zip(predictions, gold[part], strict=True)]
            tokens[part, j] = [p.prompt_tokens for p in predictions]
            done += 1
            progress(done / steps)
    return TrainingData(features=features_for(builder, labels, queries, embeddings), correct=correct,
                        prompt_tokens=tokens)


def validate(data: TrainingData, candidate_k: Sequence[int], seed: int, C: float = 1.0) -> dict:
    """Fit on 80% of the held-back examples and report, on the other 20%, accuracy and prompt tokens at each
    fixed count and with the controller choosing per input."""
    n = len(data.correct)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * VALIDATION_SHARE)))
    val, train = order[:n_val], order[n_val:]
    controller = MetaController(candidate_k=tuple(candidate_k), C=C).fit(data.features[train], data.correct[train])
    chosen = controller.choose(controller.predict_proba(data.features[val]), data.prompt_tokens[val])
    rows = np.arange(len(val))
    fixed = [{"k": int(k), "accuracy": float(data.correct[val, j].mean()),
              "mean_prompt_tokens": float(data.prompt_tokens[val, j].mean())} for j, k in enumerate(candidate_k)]
    return {
        "n_train": int(len(train)),
        "n_validation": int(len(val)),
        "fixed": fixed,
        "controller": {
            "accuracy": float(data.correct[val][rows, chosen].mean()),
            "mean_k": float(np.asarray(candidate_k)[chosen].mean()),
            "mean_prompt_tokens": float(data.prompt_tokens[val][rows, chosen].mean()),
        },
    }
