"""vLLM's label probabilities against a direct transformers computation on the same model and prompts."""

from __future__ import annotations

import numpy as np
import pytest

from controller.scoring import normalise_label_logprobs
from controller.templates import Demo, PromptTemplate
from tests.conftest import load_split

pytestmark = pytest.mark.engine


def reference_logprobs(model_dir: str, prompts: list[list[int]], continuations: list[list[int]]) -> np.ndarray:
    """log P(continuation | prompt) from one full forward pass per (prompt, continuation), in float32."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    out = np.zeros((len(prompts), len(continuations)))
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            for j, cont in enumerate(continuations):
                ids = torch.tensor([prompt + cont])
                logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
                out[i, j] = sum(float(logprobs[len(prompt) - 1 + t, tok]) for t, tok in enumerate(cont))
    return out


@pytest.mark.parametrize(
    "verbalizers",
    [
        {"negative": "negative", "positive": "positive"},  # one token each: one request per prompt
        {"negative": "bad movie", "positive": "good movie"},  # several tokens, distinct first tokens
        {"negative": "not good", "positive": "not bad at all"},  # shared first token
    ],
    ids=["single-token", "multi-token", "shared-prefix"],
)
async def test_vllm_label_probabilities_match_transformers(runtime, verbalizers):
    scorer = runtime.scorer
    template = PromptTemplate.parse("Input: {text}\nLabel: {label}")
    rows = load_split("sst2", "train", limit=8)
    demos = [Demo({"text": r["text"]}, verbalizers[r["label"]]) for r in rows[:4]]
    prompts = [scorer.tokenize(template.build_prompt(demos[:k], {"text": r["text"]})) for k, r in
               zip([0, 2, 4], rows[4:7], strict=True)]
    labels = list(verbalizers)
    continuations = [template.continuation(verbalizers[label]) for label in labels]
    cont_ids = [scorer.continuation_ids(c) for c in continuations]
    if verbalizers["negative"] != "negative":
        assert max(len(c) for c in cont_ids) > 1

    scored = await scorer.score(prompts, continuations)
    got = np.array([s.label_logprobs for s in scored])
    expected = reference_logprobs(str(scorer.model_dir), prompts, cont_ids)

    # Both sides compute in float32 here (bf16 only where the CPU has it natively): allow its noise.
    tolerance = 0.05 if scorer.dtype == "bfloat16" else 0.01
    assert np.abs(got - expected).max() < tolerance * 5, (got, expected)
    for g, e in zip(got, expected, strict=True):
        assert np.abs(normalise_label_logprobs(g) - normalise_label_logprobs(e)).max() < tolerance
    assert [s.prompt_tokens for s in scored] == [len(p) for p in prompts]
