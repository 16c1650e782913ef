"""Score planned prompts, estimate label bias per demonstration set, and return calibrated predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controller.calibration import (
    DOMAIN_SAMPLES,
    Calibration,
    DomainWords,
    apply_bias,
    content_free_queries,
    estimate_bias,
)
from controller.planning import PlannedPrompt, PromptBuilder
from controller.scoring import LabelScorer, normalise_label_logprobs


@dataclass(frozen=True)
class Prediction:
    label: str
    probs: dict[str, float]
    uncalibrated_probs: dict[str, float]
    demo_rows: list[int]
    prompt_tokens: int
    prompt: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int  # prompts of the inputs
    calibration_tokens: int  # prompts spent estimating label bias
    total_tokens: int  # every token the engine was given (label continuations included)
    cached_tokens: int  # of total_tokens, served from vLLM's prefix cache


@dataclass(frozen=True)
class BatchResult:
    predictions: list[Prediction]
    usage: Usage


def calibration_queries(
    calibration: Calibration, fields: Sequence[str], domain_words: DomainWords | None, seed: int
) -> list[dict[str, str]]:
    if calibration == "contextual":
        return content_free_queries(fields)
    if calibration == "domain":
        if domain_words is None or domain_words.empty:
            # No in-domain text to draw from yet: fall back to content-free inputs rather than skip calibrating.
            return content_free_queries(fields)
        return domain_words.sample(DOMAIN_SAMPLES, seed)
    return []


@dataclass(frozen=True)
class CalibrationPlan:
    """The calibration prompts of a batch: one bias estimate per distinct demonstration set."""

    demo_sets: list[tuple[int, ...]]
    prompts: list[tuple[int, list[int]]]  # (index into demo_sets, token ids)


def plan_calibration(
    builder: PromptBuilder,
    planned: Sequence[PlannedPrompt],
    calibration: Calibration,
    domain_words: DomainWords | None = None,
    seed: int = 0,
) -> CalibrationPlan:
    """Render and tokenize the calibration prompts (CPU work: run it off the event loop)."""
    queries = calibration_queries(calibration, builder.template.fields, domain_words, seed)
    # Inputs that share demonstrations share a bias estimate.
    demo_sets = list(dict.fromkeys(tuple(p.demo_rows) for p in planned)) if queries else []
    prompts: list[tuple[int, list[int]]] = []
    for set_index, rows in enumerate(demo_sets):
        for query in queries:
            ids = builder.tokenize(builder.render(query, rows))
            if len(ids) <= builder.max_prompt_tokens:  # a random-word string may not fit beside long demos
                prompts.append((set_index, ids))
    return CalibrationPlan(demo_sets=demo_sets, prompts=prompts)


async def predict_batch(
    builder: PromptBuilder,
    planned: Sequence[PlannedPrompt],
    calibration: CalibrationPlan,
    labels: Sequence[str],
    scorer: LabelScorer,
) -> BatchResult:
    """Label distributions for planned prompts, calibrated against the bias of each distinct demonstration set."""
    continuations = [builder.template.continuation(builder.verbalizers[label]) for label in labels]
    # Inputs first, calibration after: an input's prompt leaves its demonstrations in the engine's prefix
    # cache, so the calibration prompts that share them compute little more than their own query.
    main = await scorer.score([p.token_ids for p in planned], continuations)
    calib = await scorer.score([ids for _, ids in calibration.prompts], continuations) if calibration.prompts else []

    biases: dict[tuple[int, ...], np.ndarray] = {}
    for set_index, rows in enumerate(calibration.demo_sets):
        dists = [normalise_label_logprobs(s.label_logprobs)
                 for (j, _), s in zip(calibration.prompts, calib, strict=True) if j == set_index]
        if dists:
            biases[rows] = estimate_bias(np.stack(dists))

    predictions: list[Prediction] = []
    for item, result in zip(planned, main, strict=True):
        raw = normalise_label_logprobs(result.label_logprobs)
        bias = biases.get(tuple(item.demo_rows))
        final = apply_bias(raw, bias) if bias is not None else raw
        predictions.append(
            Prediction(
                label=labels[int(np.argmax(final))],
                probs={label: float(p) for label, p in zip(labels, final, strict=True)},
                uncalibrated_probs={label: float(p) for label, p in zip(labels, raw, strict=True)},
                demo_rows=list(item.demo_rows),
                prompt_tokens=result.prompt_tokens,
                prompt=item.text,
            )
        )
    scored = [*main, *calib]
    usage = Usage(
        prompt_tokens=sum(s.prompt_tokens for s in main),
        calibration_tokens=sum(s.prompt_tokens for s in calib),
        total_tokens=sum(s.computed_tokens + s.cached_tokens for s in scored),
        cached_tokens=sum(s.cached_tokens for s in scored),
    )
    return BatchResult(predictions=predictions, usage=usage)
