"""Turn a batch of queries into prompts: pick demonstrations, fit the context window and the token budget."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from controller.pool import LabeledPool
from controller.retrieval import Selection, cosine_similarities, select_demos, shares_one_set
from controller.scoring import LabelScorer
from controller.templates import Demo, PromptTemplate


class InputTooLongError(ValueError):
    """A query does not fit the model's context window even without demonstrations."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(
            f"inputs[{index}] needs {tokens} prompt tokens without demonstrations, more than the model's "
            f"context window allows ({limit}); shorten the input"
        )
        self.index, self.tokens, self.limit = index, tokens, limit


class BudgetTooSmallError(ValueError):
    """Even zero-shot prompts for the batch exceed ``max_prompt_tokens``."""

    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(
            f"budget.max_prompt_tokens={budget} is too small: zero-shot prompts for these inputs already need "
            f"{needed} tokens; raise the budget or send fewer inputs"
        )
        self.needed, self.budget = needed, budget


@dataclass
class PlannedPrompt:
    """One prompt to score: the query, its demonstrations (pool rows, prompt order) and its tokens."""

    query: Mapping[str, str]
    demo_rows: list[int]
    similarities: np.ndarray  # similarity of every pool row to the query
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    # Which demonstration goes first when the prompt must shrink: retrieved ones lose the least similar (the
    # first); random ones the last, so what is left is still a prefix of the seeded order that other inputs share.
    trim_last: bool = False

    def drop_demo(self) -> None:
        self.demo_rows = self.demo_rows[:-1] if self.trim_last else self.demo_rows[1:]


class PromptBuilder:
    """Renders prompts for one task and keeps them inside the model's context window."""

    def __init__(
        self,
        template: PromptTemplate,
        verbalizers: Mapping[str, str],
        pool: LabeledPool,
        tokenize: Callable[[str], list[int]],
        max_model_len: int,
        max_continuation_tokens: int,
    ) -> None:
        self.template = template
        self.verbalizers = verbalizers
        self.pool = pool
        self.tokenize = tokenize
        # Room left for the longest verbalizer: its tokens are fed after the prompt when scoring.
        self.max_prompt_tokens = max_model_len - max_continuation_tokens
        self._demo_tokens: dict[int, int] = {}
        self._separator_tokens: int | None = None

    @classmethod
    def for_scorer(cls, template: PromptTemplate, verbalizers: Mapping[str, str], pool: LabeledPool,
                   scorer: LabelScorer) -> PromptBuilder:
        """A builder on this scorer's tokenizer and window, leaving room for the longest verbalizer."""
        longest = max(len(scorer.continuation_ids(template.continuation(v))) for v in verbalizers.values())
        return cls(template, verbalizers, pool, scorer.tokenize, scorer.max_model_len, longest)

    def zero_shot_tokens(self, query: Mapping[str, str]) -> int:
        return len(self.tokenize(self.render(query, [])))

    def demo_tokens(self, demo_rows: Sequence[int]) -> int:
        """What these demonstrations add to a prompt, without tokenizing the prompt: each one's marginal tokens,
        measured once per pool row between two separators (as it sits in a prompt). Zero-shot tokens plus
        this is within a token or so of the exact count (merges across separators aside)."""
        sep = self.template.separator
        context = self.template.template.split("{", 1)[0] or "x"  # what follows a separator: the template's start
        if self._separator_tokens is None:
            self._separator_tokens = len(self.tokenize(sep + context))
        total = 0
        for row in demo_rows:
            cost = self._demo_tokens.get(row)
            if cost is None:
                demo = Demo(self.pool.inputs[row], self.verbalizers[self.pool.labels[row]])
                text = sep + self.template.render_demo(demo) + sep + context
                cost = len(self.tokenize(text)) - self._separator_tokens
                self._demo_tokens[row] = cost
            total += cost
        return total

    def render(self, query: Mapping[str, str], demo_rows: Sequence[int]) -> str:
        demos = [Demo(self.pool.inputs[i], self.verbalizers[self.pool.labels[i]]) for i in demo_rows]
        return self.template.build_prompt(demos, query)

    def fill(self, planned: PlannedPrompt) -> None:
        planned.text = self.render(planned.query, planned.demo_rows)
        planned.token_ids = self.tokenize(planned.text)

    def fit_window(self, planned: PlannedPrompt, index: int) -> None:
        """Drop demonstrations (``PlannedPrompt.drop_demo``) until the prompt fits the context window."""
        self.fill(planned)
        while len(planned.token_ids) > self.max_prompt_tokens:
            if not planned.demo_rows:
                raise InputTooLongError(index, len(planned.token_ids), self.max_prompt_tokens)
            planned.drop_demo()
            self.fill(planned)


def similarities_for(builder: PromptBuilder, n_queries: int, query_embeddings: np.ndarray | None) -> np.ndarray:
    pool = builder.pool
    if query_embeddings is not None and len(pool):
        return cosine_similarities(query_embeddings, pool.embeddings)
    return np.zeros((n_queries, len(pool)), dtype=np.float32)


def per_query_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """One seed for each of n queries: the one given for all, or those given, one per query."""
    seeds = [int(seed)] * n if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} queries")
    return seeds


def select_rows(builder: PromptBuilder, similarities: np.ndarray, ks: Sequence[int], selection: Selection,
                seed: int | Sequence[int]) -> list[list[int]]:
    """Each query's demonstrations (pool rows, prompt order), before any fitting. ``seed`` may be one per
    query (random selection then draws a set per query instead of one shared set)."""
    seeds = per_query_seeds(seed, len(ks))
    rows: list[list[int]] = []
    for i, (k, query_seed) in enumerate(zip(ks, seeds, strict=True)):
        chosen = select_demos(selection, similarities[i], builder.pool.embeddings, k, seed=query_seed) if k else []
        rows.append([int(r) for r in chosen])
    return rows


def plan_rows(builder: PromptBuilder, queries: Sequence[Mapping[str, str]], similarities: np.ndarray,
              rows: Sequence[list[int]], max_prompt_tokens: int | None, selection: Selection = "knn",
              ) -> list[PlannedPrompt]:
    """Render and tokenize prompts with the demonstrations ``selection`` gave, fit the window, then the budget."""
    trim_last = shares_one_set(selection)
    planned: list[PlannedPrompt] = []
    for i, (query, demo_rows) in enumerate(zip(queries, rows, strict=True)):
        item = PlannedPrompt(query=query, demo_rows=list(demo_rows), similarities=similarities[i],
                             trim_last=trim_last)
        builder.fit_window(item, i)
        planned.append(item)
    if max_prompt_tokens is not None:
        fit_budget(builder, planned, max_prompt_tokens)
    return planned


def plan_batch(
    builder: PromptBuilder,
    queries: Sequence[Mapping[str, str]],
    query_embeddings: np.ndarray | None,
    ks: Sequence[int],
    selection: Selection,
    seed: int | Sequence[int],
    max_prompt_tokens: int | None,
) -> list[PlannedPrompt]:
    """Prompts for a batch: retrieve each query's demonstrations, fit the window, then the budget."""
    similarities = similarities_for(builder, len(queries), query_embeddings)
    rows = select_rows(builder, similarities, ks, selection, seed)
    return plan_rows(builder, queries, similarities, rows, max_prompt_tokens, selection)


def fit_budget(builder: PromptBuilder, planned: list[PlannedPrompt], max_prompt_tokens: int) -> None:
    """Trim demonstrations until the batch's prompts fit ``max_prompt_tokens``.

    Each step takes one demonstration (``drop_demo``) from the prompt that holds the most, so the
    budget is shared evenly across inputs. The meta-controller's allocator spends it more cleverly."""
    total = sum(len(p.token_ids) for p in planned)
    while total > max_prompt_tokens:
        richest = max(range(len(planned)), key=lambda j: (len(planned[j].demo_rows), len(planned[j].token_ids)))
        item = planned[richest]
        if not item.demo_rows:
            raise BudgetTooSmallError(total, max_prompt_tokens)
        before = len(item.token_ids)
        item.drop_demo()
        builder.fill(item)
        total += len(item.token_ids) - before
