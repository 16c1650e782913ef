"""Hidden states from the real engine: what vLLM's pooling runner returns is the model's last hidden state
after its final norm (transformers' ``hidden_states[-1]``), and the hidden-state head answers an input the same
alone, in a batch, or shuffled, within the engine's bf16 noise."""

from __future__ import annotations

import numpy as np
import pytest
from anyio import to_thread

from controller.counts import TaskDefaults
from controller.hidden_fit import fit_hidden_head
from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.predictor import PredictOptions, Predictor
from controller.templates import PromptTemplate
from service.hidden_states import VllmHiddenScorer
from tests.conftest import load_split

pytestmark = pytest.mark.engine
TEMPLATE = "Review: {text}\nSentiment: {label}"
NOISE = 0.02  # the engine's measured bf16 noise on a probability


def _transformers_last_states(model_dir: str, prompts: list[list[int]]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return np.stack([model(torch.tensor([p]), output_hidden_states=True).hidden_states[-1][0, -1].numpy()
                         for p in prompts])


async def test_the_pooling_engine_returns_the_last_hidden_state_after_the_final_norm(runtime):
    scorer = runtime.scorer
    assert isinstance(scorer, VllmHiddenScorer)
    rows = load_split("sst2", "train", limit=6)
    prompts = [scorer.tokenize(f"Review: {r['text']}\nSentiment:") for r in rows]
    states = await scorer.hidden_states(prompts)
    expected = await to_thread.run_sync(_transformers_last_states, str(scorer.model_dir), prompts)
    cosine = (states * expected).sum(axis=1) / np.linalg.norm(states, axis=1) / np.linalg.norm(expected, axis=1)
    assert states.shape == expected.shape and (cosine > 0.999).all(), cosine
    assert np.allclose(np.linalg.norm(states, axis=1), np.linalg.norm(expected, axis=1), rtol=0.02)


async def test_an_input_s_hidden_head_answer_is_the_same_alone_in_a_batch_or_shuffled(runtime):
    scorer = runtime.scorer
    rows = load_split("sst2", "train", limit=80)
    pool_rows, test_rows = rows[:64], rows[64:]
    labels = ["negative", "positive"]
    texts = [r["text"] for r in rows]
    embeddings = await to_thread.run_sync(runtime.embedder.embed, texts)
    pool = LabeledPool(ids=[str(i) for i in range(64)], inputs=[{"text": r["text"]} for r in pool_rows],
                       labels=[r["label"] for r in pool_rows], embeddings=embeddings[:64])
    builder = PromptBuilder.for_scorer(PromptTemplate.parse(TEMPLATE), {label: label for label in labels}, pool,
                                       scorer)
    gold = np.array([labels.index(r["label"]) for r in pool_rows])
    fitted = await fit_hidden_head(builder, pool.inputs, pool.embeddings, gold, np.arange(64), 2, scorer, seed=0)
    predictor = Predictor.from_options(builder, labels, PredictOptions(decision="hidden"), TaskDefaults(4),
                                       hidden=fitted.head)
    queries = [{"text": r["text"]} for r in test_rows]

    async def predicted(order: list[int]) -> dict[int, np.ndarray]:
        plan = predictor.plan([queries[i] for i in order], embeddings[64:][order])
        result = await predictor.run(plan, scorer)
        return {i: np.array([p.probs[label] for label in labels]) for i, p in zip(order, result.predictions,
                                                                                  strict=True)}

    together = await predicted(list(range(len(queries))))
    shuffled = await predicted(list(np.random.default_rng(0).permutation(len(queries))))
    for i in range(len(queries)):
        alone = (await predicted([i]))[i]
        for other in (together[i], shuffled[i]):
            assert other.argmax() == alone.argmax() and np.abs(other - alone).max() <= NOISE, (i, alone, other)
