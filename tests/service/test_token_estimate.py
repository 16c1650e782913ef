"""The per-demonstration token estimate that prices candidate counts, against exact tokenization with the
default model's real tokenizer."""

import numpy as np

from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.templates import PromptTemplate
from service.config import Settings
from service.model_files import resolve_model
from tests.conftest import load_split
from tests.fakes import FakeEmbedder


def test_estimate_matches_exact_token_counts():
    from transformers import AutoTokenizer

    settings = Settings()
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(settings.model, settings.model_cache)))
    rows = load_split("sst2", "train", limit=40)
    pool = LabeledPool(ids=[str(i) for i in range(32)], inputs=[{"text": r["text"]} for r in rows[:32]],
                       labels=[r["label"] for r in rows[:32]], embeddings=FakeEmbedder().embed(["x"] * 32))
    for instruction in (None, "Classify the sentiment."):
        template = PromptTemplate.parse("Review: {text}\nSentiment: {label}", instruction=instruction)
        builder = PromptBuilder(template, {"negative": "negative", "positive": "positive"}, pool,
                                lambda text: tokenizer(text)["input_ids"], 8192, 1)
        errors = []
        for i, row in enumerate(rows[32:]):
            demo_rows = list(range(i, i + 8))
            exact = len(builder.tokenize(builder.render({"text": row["text"]}, demo_rows)))
            estimate = builder.zero_shot_tokens({"text": row["text"]}) + builder.demo_tokens(demo_rows)
            errors.append(estimate - exact)
        assert np.abs(errors).max() <= 1, errors
