"""The hidden-state head: a logistic regression on the model's last hidden state of an ICL prompt joined with
the retrieval embedding, in place of the label tokens' probabilities.

Few-shot prompting reads its k demonstrations through a handful of label-token probabilities; the prompt's
last hidden state carries far more, and a linear read-out fitted on every labeled example's state uses the
whole pool (FADS-ICL; Hidden Calibration reads the same state with label centroids). Joined with the
retrieval embedding it beat both the embedding head and each alone on the shared datasets
(``bench/hidden_heads.py``).

The fit job reads each labeled example's prompt at the head's count (its demonstrations never from its own
near-twin group, as a new input's never are its own), up to ``MAX_EXAMPLES`` of them, the held-back ones first.
Its evidence is cross-fitted like the embedding head's, and its probabilities are tempered on that evidence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from controller.calibration_fit import fit_temperature, with_temperature
from controller.heads import HiddenLinearHead, cross_fitted_with
from controller.metrics import expected_calibration_error, macro_f1
from controller.planning import Prompt, PromptBuilder, build_prompts
from controller.retrieval import KnnRetriever, cosine_similarities

# The counts the fit reads prompts at, a head for each: the input alone, and with its nearest demonstration.
# On the shared datasets k = 2 and 4 gained nothing on the mean over these two, at more tokens, and which of the
# two is better differs from task to task (bench/README.md, "hidden_heads.py"): the choice rule decides.
HIDDEN_COUNTS = (0, 1)
# Labeled examples read at most: 1,000 prompts at k = 1 cost about 60,000 tokens.
MAX_EXAMPLES = 2000
_CHUNK = 64  # prompts per engine call, for progress


@runtime_checkable
class HiddenStateReader(Protocol):
    async def hidden_states(self, prompts: Sequence[list[int]]) -> np.ndarray:
        """(n, hidden size): the model's last hidden state at each prompt's last token."""
        ...


def joined(states: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    return np.hstack([np.asarray(states, dtype=np.float64), np.asarray(embeddings, dtype=np.float64)])


@dataclass(frozen=True)
class HiddenHead:
    """What serves: the linear head on [hidden state, embedding] at ``count`` kNN demonstrations, tempered."""

    linear: HiddenLinearHead
    count: int
    temperature: float

    def predict_proba(self, states: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        return with_temperature(self.linear.predict_proba(joined(states, embeddings)), self.temperature)


@dataclass(frozen=True)
class HiddenFit:
    """The head, and its cross-fitted, tempered distributions and prompt tokens of the ``rows`` it read
    (positions in the order the caller gave: the held-back examples first)."""

    head: HiddenHead
    cross_fitted: np.ndarray  # (len(rows), L)
    prompt_tokens: np.ndarray  # (len(rows),)
    gold: np.ndarray

    @property
    def name(self) -> str:
        """Its option's name in the fit's choice."""
        return f"hidden k={self.head.count}"

    def macro_f1(self, n_labels: int) -> float:
        return macro_f1(self.gold, self.cross_fitted.argmax(axis=1), n_labels)

    def figures(self, n: int, n_labels: int) -> dict[str, float]:
        """Its cross-fitted figures on its first ``n`` examples (the held-back ones every count was scored on),
        as a cascade's replay reports them."""
        answers, gold = self.cross_fitted[:n].argmax(axis=1), self.gold[:n]
        return {"accuracy": float((answers == gold).mean()), "macro_f1": macro_f1(gold, answers, n_labels),
                "mean_k": float(self.head.count), "mean_prompt_tokens": float(np.mean(self.prompt_tokens[:n]))}

    def describe(self, n_labels: int) -> dict[str, object]:
        return {"count": self.head.count, "examples": len(self.gold), "temperature": round(self.head.temperature, 4),
                "macro_f1": round(self.macro_f1(n_labels), 4),
                "ece": round(expected_calibration_error(self.cross_fitted, self.gold), 4),
                "mean_prompt_tokens": round(float(np.mean(self.prompt_tokens)), 1)}


def demonstrations(embeddings: np.ndarray, groups: np.ndarray, k: int) -> list[list[int]]:
    """Each example's ``k`` nearest among the others, in prompt order, none from its own near-twin group."""
    if k <= 0:
        return [[] for _ in range(len(embeddings))]
    retriever = KnnRetriever()
    similarities = cosine_similarities(embeddings, embeddings)
    out = []
    for i, row in enumerate(similarities):
        row = np.where(groups == groups[i], -np.inf, row)
        out.append(retriever.select(row, embeddings, min(k, int(np.isfinite(row).sum()))))
    return out


async def fit_hidden_head(builder: PromptBuilder, queries: Sequence[Mapping[str, str]], embeddings: np.ndarray,
                          gold: np.ndarray, groups: np.ndarray, n_labels: int, reader: HiddenStateReader,
                          seed: int, count: int = 1,
                          progress: Callable[[float], None] = lambda _: None) -> HiddenFit:
    """Read, fit and cross-fit the head on these labeled examples (``builder``'s pool holds them in the same
    order). Raises ValueError where it cannot be cross-fitted (one near-twin group)."""
    prompts = await asyncio.to_thread(_prompts, builder, queries, embeddings, groups, count)
    states = []
    for start in range(0, len(prompts), _CHUNK):
        states.append(await reader.hidden_states([p.token_ids for p in prompts[start:start + _CHUNK]]))
        progress(min(1.0, (start + _CHUNK) / len(prompts)))
    head, cross_fitted = await asyncio.to_thread(_fitted, np.concatenate(states), embeddings, gold, groups,
                                                 n_labels, count, seed)
    return HiddenFit(head, cross_fitted, np.array([len(p.token_ids) for p in prompts]), gold)


def _prompts(builder: PromptBuilder, queries: Sequence[Mapping[str, str]], embeddings: np.ndarray,
             groups: np.ndarray, count: int) -> list[Prompt]:
    """CPU work: every pair of examples compared, every prompt rendered and tokenized."""
    return build_prompts(builder, queries, demonstrations(embeddings, groups, count), KnnRetriever().trim)


def _fitted(states: np.ndarray, embeddings: np.ndarray, gold: np.ndarray, groups: np.ndarray, n_labels: int,
            count: int, seed: int) -> tuple[HiddenHead, np.ndarray]:
    """CPU work: the cross-fitted distributions (tempered) and the head fitted on every example."""
    features = joined(states, embeddings)
    raw = cross_fitted_with(HiddenLinearHead.fit, features, gold, n_labels, groups, seed)
    temperature = fit_temperature(raw, gold)
    return (HiddenHead(HiddenLinearHead.fit(features, gold, n_labels), count, temperature),
            with_temperature(raw, temperature))
