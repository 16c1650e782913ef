"""Score planned prompts, estimate label bias per demonstration set, and return calibrated predictions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from controller.calibration import (
    DEFAULT_DOMAIN,
    BiasCache,
    Calibration,
    DomainSettings,
    DomainWords,
    apply_bias,
    content_free_queries,
    estimate_bias,
    pool_biases,
)
from controller.planning import PlannedPrompt, PromptBuilder, per_query_seeds, plan_batch
from controller.retrieval import Selection, shares_one_set
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
    calibration_tokens: int  # tokens the engine computed to estimate label bias (prefix-cache hits excluded)
    calibration_cached_tokens: int  # calibration prompts' tokens served from the prefix cache
    total_tokens: int  # every token the engine was given (label continuations included)
    cached_tokens: int  # of total_tokens, served from vLLM's prefix cache


@dataclass(frozen=True)
class BatchResult:
    predictions: list[Prediction]
    usage: Usage


DemoSet = tuple[int, ...]


@dataclass(frozen=True)
class CalibrationPlan:
    """The calibration prompts of a batch: bias estimates per distinct demonstration set."""

    demo_sets: list[DemoSet]
    prompts: list[tuple[int, list[int]]]  # (index into demo_sets, token ids)
    cached: dict[int, np.ndarray]  # demo_sets index -> bias estimate found in the cache
    pooling: float = 0.0
    cache_keys: dict[int, tuple] | None = None  # demo_sets index -> key to store a new estimate under
    targets: list[int] | None = None  # demo_sets indices that get a bias (own or pooled); None: every set


def _domain_sets(demo_sets: Sequence[DemoSet], max_sets: int | None) -> list[int]:
    """Which sets to calibrate: all, or ``max_sets`` spread evenly over the batch's order."""
    if max_sets is None or len(demo_sets) <= max_sets:
        return list(range(len(demo_sets)))
    return sorted({int(i) for i in np.linspace(0, len(demo_sets) - 1, max_sets).round()})


def plan_calibration(
    builder: PromptBuilder,
    planned: Sequence[PlannedPrompt],
    calibration: Calibration,
    domain_words: DomainWords | None = None,
    seed: int = 0,
    domain: DomainSettings = DEFAULT_DOMAIN,
    cache: BiasCache | None = None,
    selection: Selection | None = None,
) -> CalibrationPlan:
    """Render and tokenize the calibration prompts (CPU work: run it off the event loop).

    Inputs that share demonstrations share an estimate. Contextual calibration uses the three content-free
    inputs under every set. Domain calibration draws ``domain.samples`` strings per set
    (``domain.shared_set_samples`` under random selection, whose one set all inputs share), seeded by the request
    seed and the set itself (reproducible whatever else is in the batch); without in-domain text yet it falls
    back to content-free inputs rather than skip calibrating. With ``selection="knn"`` and settings that leave
    kNN demonstrations alone, only prompts without demonstrations are calibrated."""
    if calibration == "none":
        return CalibrationPlan(demo_sets=[], prompts=[], cached={})
    demo_sets: list[DemoSet] = list(dict.fromkeys(tuple(p.demo_rows) for p in planned))
    fields = builder.template.fields
    use_domain = calibration == "domain" and domain_words is not None and not domain_words.empty
    settings = domain if use_domain else DomainSettings(samples=len(content_free_queries(fields)))
    samples = settings.samples_for(shared_set=selection is not None and shares_one_set(selection))
    chosen = _domain_sets(demo_sets, settings.max_sets) if use_domain else list(range(len(demo_sets)))
    if use_domain and selection == "knn" and not settings.calibrate_knn:
        chosen = [j for j in chosen if not demo_sets[j]]
        targets = chosen
    else:
        targets = list(range(len(demo_sets)))
    cached: dict[int, np.ndarray] = {}
    keys: dict[int, tuple] = {}
    prompts: list[tuple[int, list[int]]] = []
    for set_index in chosen:
        rows = demo_sets[set_index]
        key = (calibration, samples, seed if use_domain else None, rows)
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            cached[set_index] = hit
            continue
        keys[set_index] = key
        queries = (domain_words.sample(samples, [seed, *rows]) if use_domain and domain_words
                   else content_free_queries(fields))
        for query in queries:
            ids = builder.tokenize(builder.render(query, rows))
            if len(ids) <= builder.max_prompt_tokens:  # a random-word string may not fit beside long demos
                prompts.append((set_index, ids))
    return CalibrationPlan(demo_sets=demo_sets, prompts=prompts, cached=cached,
                           pooling=settings.pooling if use_domain else 0.0, cache_keys=keys, targets=targets)


def estimate_biases(calibration: CalibrationPlan, distributions: Sequence[np.ndarray],
                    cache: BiasCache | None = None) -> dict[DemoSet, np.ndarray]:
    """Each demonstration set's bias from its calibration prompts' label distributions (or the cache), then
    pooled across the batch as the plan says."""
    own: dict[int, np.ndarray] = dict(calibration.cached)
    for set_index in dict.fromkeys(j for j, _ in calibration.prompts):
        dists = [d for (j, _), d in zip(calibration.prompts, distributions, strict=True) if j == set_index]
        own[set_index] = estimate_bias(np.stack(dists))
        if cache is not None and calibration.cache_keys and set_index in calibration.cache_keys:
            cache.put(calibration.cache_keys[set_index], own[set_index])
    targets = range(len(calibration.demo_sets)) if calibration.targets is None else calibration.targets
    if calibration.pooling == 0.0 and all(j in own for j in targets):
        return {calibration.demo_sets[j]: own[j] for j in targets}
    pooled = pool_biases(own, targets, calibration.pooling)
    return {calibration.demo_sets[j]: bias for j, bias in pooled.items()}


async def predict_batch(
    builder: PromptBuilder,
    planned: Sequence[PlannedPrompt],
    calibration: CalibrationPlan,
    labels: Sequence[str],
    scorer: LabelScorer,
    cache: BiasCache | None = None,
) -> BatchResult:
    """Label distributions for planned prompts, calibrated against the bias of each distinct demonstration set."""
    continuations = [builder.template.continuation(builder.verbalizers[label]) for label in labels]
    # Inputs first, calibration after: an input's prompt leaves its demonstrations in the engine's prefix
    # cache, so the calibration prompts that share them compute little more than their own query.
    main = await scorer.score([p.token_ids for p in planned], continuations)
    calib = await scorer.score([ids for _, ids in calibration.prompts], continuations) if calibration.prompts else []

    biases = estimate_biases(calibration, [normalise_label_logprobs(s.label_logprobs) for s in calib], cache)

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
        calibration_tokens=sum(s.computed_tokens for s in calib),
        calibration_cached_tokens=sum(s.cached_tokens for s in calib),
        total_tokens=sum(s.computed_tokens + s.cached_tokens for s in scored),
        cached_tokens=sum(s.cached_tokens for s in scored),
    )
    return BatchResult(predictions=predictions, usage=usage)


async def predict_uncalibrated(
    builder: PromptBuilder,
    queries: Sequence[Mapping[str, str]],
    embeddings: np.ndarray,
    k: int,
    selection: Selection,
    seed: int | Sequence[int],
    labels: Sequence[str],
    scorer: LabelScorer,
    chunk: int,
) -> AsyncIterator[tuple[slice, list[Prediction]]]:
    """Uncalibrated predictions with k demonstrations each, ``chunk`` queries per engine batch, yielded with the
    slice of ``queries`` they answer (``seed``: one, or one per query). Planning (tokenising, retrieval) runs in
    a worker thread, so a long job does not hold up the event loop that serves requests."""
    seeds = per_query_seeds(seed, len(queries))
    for start in range(0, len(queries), chunk):
        part = slice(start, min(start + chunk, len(queries)))
        planned = await asyncio.to_thread(plan_batch, builder, queries[part], embeddings[part],
                                          [k] * (part.stop - part.start), selection, seeds[part], None)
        result = await predict_batch(builder, planned, plan_calibration(builder, planned, "none"), labels, scorer)
        yield part, result.predictions
