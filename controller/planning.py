"""Turn queries and their demonstrations into prompts that fit the context window and the token budget."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from controller.errors import BudgetTooSmallError, EmptyPromptError, InputTooLongError
from controller.pool import LabeledPool
from controller.scoring import LabelScorer
from controller.templates import Demo, PromptTemplate


@dataclass
class Prompt:
    """One prompt to score: the query, its demonstrations (pool rows, prompt order), its text and tokens."""

    query: Mapping[str, str]
    demo_rows: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""


Trim = Callable[[Sequence[int]], list[int]]  # one demonstration fewer (``Retriever.trim``)


def renders_empty(template: PromptTemplate, tokenize: Callable[[str], list[int]], query: Mapping[str, str]) -> bool:
    """Whether the query without demonstrations is a prompt of no tokens (an empty input, no instruction, and a
    template that puts no text around it), which no engine scores. Text that is not white space always makes
    tokens: only the rest is tokenized."""
    text = template.build_prompt([], query)
    return not text.strip() and not tokenize(text)


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

    def rebased(self, pool: LabeledPool, new_rows: np.ndarray) -> PromptBuilder:
        """The same builder on a changed pool, keeping the token counts it measured of demonstrations that did
        not change: ``new_rows[r]`` is old row r's row in ``pool``, or -1 where it left the pool or changed."""
        rebased = copy.copy(self)
        rebased.pool = pool
        measured = dict(self._demo_tokens)  # one copy: planning threads may add to it meanwhile
        rebased._demo_tokens = {int(new_rows[row]): cost for row, cost in measured.items()
                                if row < len(new_rows) and new_rows[row] >= 0}
        return rebased

    def renders_empty(self, query: Mapping[str, str]) -> bool:
        return renders_empty(self.template, self.tokenize, query)

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

    def fill(self, prompt: Prompt) -> None:
        prompt.text = self.render(prompt.query, prompt.demo_rows)
        prompt.token_ids = self.tokenize(prompt.text)

    def fit_window(self, prompt: Prompt, index: int, trim: Trim) -> None:
        """Drop demonstrations (``trim``) until the prompt fits the context window. A prompt that ends up
        without tokens is the input's fault, not the engine's: EmptyPromptError, before anything is sent."""
        self.fill(prompt)
        while len(prompt.token_ids) > self.max_prompt_tokens:
            if not prompt.demo_rows:
                raise InputTooLongError(index, len(prompt.token_ids), self.max_prompt_tokens)
            prompt.demo_rows = trim(prompt.demo_rows)
            self.fill(prompt)
        if not prompt.token_ids:
            raise EmptyPromptError(index)


def build_prompts(builder: PromptBuilder, queries: Sequence[Mapping[str, str]], demo_rows: Sequence[Sequence[int]],
                  trim: Trim, max_prompt_tokens: int | None = None) -> list[Prompt]:
    """Render and tokenize each query with its demonstrations, fit the window, then the budget."""
    prompts: list[Prompt] = []
    for i, (query, rows) in enumerate(zip(queries, demo_rows, strict=True)):
        prompt = Prompt(query=query, demo_rows=list(rows))
        builder.fit_window(prompt, i, trim)
        prompts.append(prompt)
    if max_prompt_tokens is not None:
        fit_budget(builder, prompts, max_prompt_tokens, trim)
    return prompts


def fit_budget(builder: PromptBuilder, prompts: list[Prompt], max_prompt_tokens: int, trim: Trim) -> None:
    """Trim demonstrations until the batch's prompts fit ``max_prompt_tokens``.

    Each step takes one demonstration (``trim``) from the prompt that holds the most, so the budget is shared
    evenly across inputs. The meta-controller's allocator spends it more cleverly. A prompt keeps its last
    demonstration where without it it would be empty (an empty input): no engine scores that."""
    total = sum(len(p.token_ids) for p in prompts)
    empty_alone: dict[int, bool] = {}

    def trimmable(j: int) -> bool:
        rows = len(prompts[j].demo_rows)
        if rows == 1 and j not in empty_alone:
            empty_alone[j] = builder.renders_empty(prompts[j].query)
        return rows > 1 or (rows == 1 and not empty_alone[j])

    while total > max_prompt_tokens:
        candidates = [j for j in range(len(prompts)) if trimmable(j)]
        if not candidates:
            raise BudgetTooSmallError(total, max_prompt_tokens)
        richest = max(candidates, key=lambda j: (len(prompts[j].demo_rows), len(prompts[j].token_ids)))
        prompt = prompts[richest]
        before = len(prompt.token_ids)
        prompt.demo_rows = trim(prompt.demo_rows)
        builder.fill(prompt)
        total += len(prompt.token_ids) - before
