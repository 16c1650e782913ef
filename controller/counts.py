"""How many demonstrations each input gets: one fixed count, or the meta-controller's choice per input (spent
within the token budget by its allocator when there is one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import numpy as np

from controller.cascade import NEVER, Cascade
from controller.features import features_for
from controller.meta import MetaController
from controller.planning import PromptBuilder
from controller.retrieval import Retriever


@dataclass(frozen=True)
class QueryBatch:
    """A batch of queries as retrieval sees them: their embeddings (None when nothing reads them), their
    similarity to every pool row, and one seed each."""

    queries: Sequence[Mapping[str, str]]
    embeddings: np.ndarray | None
    similarities: np.ndarray
    seeds: Sequence[int]

    def __len__(self) -> int:
        return len(self.queries)


class CountPolicy(Protocol):
    def needs_embeddings(self, retriever: Retriever) -> bool:
        """Whether choosing the counts, or retrieving that many, reads the queries' embeddings."""
        ...

    def demo_rows(self, builder: PromptBuilder, retriever: Retriever, batch: QueryBatch,
                  max_prompt_tokens: int | None) -> list[list[int]]:
        """Each query's demonstrations (pool rows, prompt order), before the window and the budget are fitted."""
        ...


@dataclass(frozen=True)
class FixedCount:
    """The same count for every input; the budget, if any, is fitted afterwards by trimming."""

    k: int

    def needs_embeddings(self, retriever: Retriever) -> bool:
        return self.k > 0 and retriever.needs_embeddings

    def demo_rows(self, builder: PromptBuilder, retriever: Retriever, batch: QueryBatch,
                  max_prompt_tokens: int | None) -> list[list[int]]:
        return retriever.select_all(batch.similarities, builder.pool.embeddings, [self.k] * len(batch), batch.seeds)


@dataclass(frozen=True)
class ControllerCount:
    """DynaICL: the meta-controller's expected accuracy of every candidate count for each input, priced in
    that input's prompt tokens at that count, and the cheapest sufficient count chosen (or the budget spent
    by the allocator). Prices come from cached per-demonstration token counts; only the chosen prompts are
    tokenized whole, and the window and the budget are then enforced on their exact counts."""

    controller: MetaController
    labels: Sequence[str]

    def needs_embeddings(self, retriever: Retriever) -> bool:
        return True  # the controller's features

    def expected_accuracy(self, builder: PromptBuilder, batch: QueryBatch,
                          zero_shot_tokens: Sequence[int]) -> np.ndarray:
        """(n, len(candidate_k)): the controller's P(correct) of each count for each input."""
        if batch.embeddings is None:
            raise ValueError("the meta-controller needs the queries' embeddings")
        features = features_for(builder, self.labels, batch.queries, batch.embeddings, batch.similarities,
                                zero_shot_tokens)
        return self.controller.predict_proba(features)

    def priced_options(self, builder: PromptBuilder, retriever: Retriever, batch: QueryBatch,
                       zero_shot_tokens: Sequence[int]) -> tuple[list[list[list[int]]], np.ndarray]:
        """Each candidate count's demonstrations for every input, and (n, len(candidate_k)) their prompt tokens."""
        options = [retriever.select_all(batch.similarities, builder.pool.embeddings, [int(k)] * len(batch),
                                        batch.seeds) for k in self.controller.candidate_k_]
        costs = np.array([[zero_shot_tokens[i] + builder.demo_tokens(option[i]) for option in options]
                          for i in range(len(batch))])
        return options, costs

    def demo_rows(self, builder: PromptBuilder, retriever: Retriever, batch: QueryBatch,
                  max_prompt_tokens: int | None) -> list[list[int]]:
        zero_shot = [builder.zero_shot_tokens(q) for q in batch.queries]
        expected = self.expected_accuracy(builder, batch, zero_shot)
        options, costs = self.priced_options(builder, retriever, batch, zero_shot)
        choice = self.controller.choose(expected, costs, max_prompt_tokens)
        return [options[j][i] for i, j in enumerate(choice)]


AutoPolicy = Literal["cascade", "controller"]


@dataclass(frozen=True)
class TaskDefaults:
    """What a task's ``demos: "auto"`` is served with: ``default_k`` demonstrations each while no fit applies,
    and once one does, ``auto_policy``: which of the fit's cascade and meta-controller chooses."""

    default_k: int
    auto_policy: AutoPolicy = "cascade"

    @classmethod
    def resolve(cls, task_k: int | None, default_k: int, auto_policy: AutoPolicy = "cascade") -> TaskDefaults:
        """A task's defaults: its own count if it was created with one (``task_k``), else ``default_k``."""
        return cls(task_k if task_k is not None else default_k, auto_policy)


@dataclass(frozen=True)
class ChosenCounts:
    """How a request's counts are chosen: the policy of its (first) pass, the cascade that follows it if any,
    and what chose them ("fixed", "default", "cascade" or "controller")."""

    counts: CountPolicy
    cascade: Cascade | None  # the stages after the first, where the first has counts after it
    name: str
    # Where the fit's cascade starts with the embedding head: the margin below which the head's answer goes on
    # to ``counts`` (``cascade.NEVER``: the head answers every input). None: no head.
    head_threshold: float | None = None
    # Whether the hidden-state head answers (at its own count, which the caller knows) instead of label tokens.
    hidden: bool = False


def count_policy(demos: int | Literal["auto"], defaults: TaskDefaults, controller: MetaController | None,
                 cascade: Cascade | None, labels: Sequence[str], pool_size: int) -> ChosenCounts:
    """The one place a request's count is chosen. ``demos: "auto"`` with a fit and a pool to draw from: the
    fitted cascade (or, with ``defaults.auto_policy`` "controller", the meta-controller; either one when the
    fit lacks the other); the count asked for; or, for "auto" without a fit, the task's default count."""
    if isinstance(demos, int):
        return ChosenCounts(FixedCount(demos), None, "fixed")
    if pool_size:
        if cascade is not None and (defaults.auto_policy == "cascade" or controller is None):
            if cascade.hidden:
                return ChosenCounts(FixedCount(0), None, "cascade", hidden=True)
            if cascade.head_first:  # the head first, then the counts after it as a cascade of their own
                if len(cascade.stages) == 1:
                    return ChosenCounts(FixedCount(0), None, "cascade", NEVER)
                rest = Cascade(cascade.stages[1:], cascade.thresholds[1:])
                after = count_policy(demos, defaults, controller, rest, labels, pool_size)
                return replace(after, head_threshold=cascade.thresholds[0])
            if len(cascade.stages) == 1:
                return ChosenCounts(FixedCount(cascade.stages[0]), None, "cascade")
            return ChosenCounts(FixedCount(cascade.stages[0]), cascade, "cascade")
        if controller is not None:
            return ChosenCounts(ControllerCount(controller, labels), None, "controller")
    return ChosenCounts(FixedCount(defaults.default_k), None, "default")
