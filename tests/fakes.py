"""Deterministic stand-ins for the engine and the embedder (the service's own fake engine), and a prompt
builder over them, for unit tests of the HTTP layer and the logic."""

from __future__ import annotations

from collections.abc import Sequence

from controller.planning import PromptBuilder
from service.fake_engine import FakeEmbedder, FakeHiddenScorer, FakeScorer

__all__ = ["FakeEmbedder", "FakeHiddenScorer", "FakeScorer", "fake_builder"]


def fake_builder(texts: Sequence[str], labels: Sequence[str], template: str = "Input: {text}\nLabel: {label}",
                 max_model_len: int = 512,
                 prefix_cache: bool = False, hidden: bool = False) -> tuple[PromptBuilder, FakeScorer, FakeEmbedder]:
    """A prompt builder over a pool of these texts and labels, on the fake scorer's tokenizer, with the scorer
    (with ``hidden``, one that reads hidden states too) and embedder it was made with: (builder, scorer,
    embedder)."""
    from controller.pool import LabeledPool
    from controller.templates import PromptTemplate

    embedder = FakeEmbedder()
    scorer = (FakeHiddenScorer if hidden else FakeScorer)(max_model_len, prefix_cache=prefix_cache)
    pool = LabeledPool(ids=[f"e{i}" for i in range(len(texts))], inputs=[{"text": t} for t in texts],
                       labels=list(labels), embeddings=embedder.embed(list(texts)))
    builder = PromptBuilder(PromptTemplate.parse(template), {label: label for label in dict.fromkeys(labels)}, pool,
                            scorer.tokenize, max_model_len, 1)
    return builder, scorer, embedder
