"""The transformers scorer (benchmark backend for GPUs without vLLM) against one plain forward pass per
(prompt, continuation): left padding, batching and the continuation trie must not change a score."""

from __future__ import annotations

import asyncio

import numpy as np

from controller.templates import Demo, PromptTemplate
from service.config import Settings
from service.model_files import resolve_model
from service.transformers_scorer import TransformersScorer
from tests.acceptance.test_label_scoring import reference_logprobs
from tests.conftest import load_split


def test_batched_left_padded_scores_match_single_forward_passes():
    settings = Settings()
    model_dir = resolve_model(settings.model, settings.model_cache)
    # A small batch budget forces several batches of different widths.
    scorer = TransformersScorer(model_dir, max_batch_tokens=300)
    template = PromptTemplate.parse("Input: {text}\nLabel: {label}")
    verbalizers = {"negative": "not good", "positive": "not bad at all"}  # shared first token: a trie of requests
    rows = load_split("sst2", "train", limit=10)
    demos = [Demo({"text": r["text"]}, verbalizers[r["label"]]) for r in rows[:4]]
    prompts = [scorer.tokenize(template.build_prompt(demos[:k], {"text": r["text"]}))
               for k, r in zip([0, 1, 2, 4, 3, 0], rows[4:10], strict=True)]
    continuations = [template.continuation(v) for v in verbalizers.values()]

    scored = asyncio.run(scorer.score(prompts, continuations))
    expected = reference_logprobs(str(model_dir), prompts, [scorer.continuation_ids(c) for c in continuations])

    assert len({len(p) for p in prompts}) > 3  # widths differ, so padding is exercised
    np.testing.assert_allclose(np.array([s.label_logprobs for s in scored]), expected, atol=2e-3)
    assert [s.prompt_tokens for s in scored] == [len(p) for p in prompts]
    assert all(s.cached_tokens == 0 and s.computed_tokens > s.prompt_tokens for s in scored)
