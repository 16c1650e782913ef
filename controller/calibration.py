"""Label-bias calibration: estimate the label bias of a prompt's context and divide it out.

- contextual (Zhao et al. 2021): the bias is the label distribution for content-free queries ("N/A", "", "[MASK]")
  under the same demonstrations.
- domain (Fei et al. 2023): the bias is the mean label distribution for strings of random in-domain words,
  as long as the task's inputs on average, under the same demonstrations.
- batch (Zhou et al. 2024): the bias is the mean label distribution of the request's own inputs; no extra
  prompts. A lone input takes the task's fitted estimate (the held-back mean at its count), or none.
- auto (the default): what the task's fit chose for each input's count (``controller.calibration_fit``), with
  its temperature; before a fit, the unfitted default (``UNFITTED_DOMAIN``).
Either way the calibrated distribution is ``p / bias``, renormalised. Each method is one ``Calibrator``: it
renders its extra prompts for a batch's demonstration sets (``calibration_prompts``), turns their label
distributions into one bias per set (``biases``), reading and filling its ``BiasCache``, and calibrates each
input (``calibrate``), saying which calibration the input got.

What is not the calibrators' own lives beside them, so that each part can be read alone: the bias arithmetic
and its cache in ``controller.bias`` (the fit uses it too), the queries and settings a bias is estimated from
in ``controller.domain`` (what domain calibration costs, and why its defaults are what they are).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from controller.bias import BiasCache, apply_bias, estimate_bias, pool_biases
from controller.calibration_fit import CountCalibration, TaskCalibration
from controller.domain import DEFAULT_DOMAIN, UNFITTED_DOMAIN, DomainSettings, DomainWords, content_free_queries
from controller.planning import Prompt, PromptBuilder
from controller.retrieval import Retriever

Calibration = Literal["auto", "batch", "none", "contextual", "domain"]
# A calibrated distribution and the calibration it got ("none" where it got none).
Calibrated = tuple[np.ndarray, str]

DemoSet = tuple[int, ...]


@dataclass(frozen=True)
class CalibrationPrompts:
    """A batch's calibration work: its distinct demonstration sets, the prompts that estimate their biases,
    the estimates the cache already had, and which sets get a bias (their own, or pooled)."""

    demo_sets: list[DemoSet] = field(default_factory=list)
    prompts: list[tuple[int, list[int]]] = field(default_factory=list)  # (index into demo_sets, token ids)
    cached: dict[int, np.ndarray] = field(default_factory=dict)  # demo_sets index -> estimate from the cache
    cache_keys: dict[int, Hashable] = field(default_factory=dict)  # demo_sets index -> key to store a new one under
    targets: list[int] = field(default_factory=list)  # demo_sets indices that get a bias
    pooling: float = 0.0


def demo_sets_of(prompts: Sequence[Prompt]) -> list[DemoSet]:
    """The batch's distinct demonstration sets, in order of first use: inputs that share one share a bias."""
    return list(dict.fromkeys(tuple(p.demo_rows) for p in prompts))


def _spread(demo_sets: Sequence[DemoSet], max_sets: int | None) -> list[int]:
    """Which sets to calibrate: all, or ``max_sets`` spread evenly over the batch's order."""
    if max_sets is None or len(demo_sets) <= max_sets:
        return list(range(len(demo_sets)))
    return sorted({int(i) for i in np.linspace(0, len(demo_sets) - 1, max_sets).round()})


@dataclass(frozen=True)
class CalibrationSources:
    """What a request's calibrator may draw on: the selection it serves, domain-calibration settings, the
    task's words (asked only by domain calibration), the pool's bias cache, and the task's fitted calibration."""

    selection: str = "knn"
    domain: DomainSettings = DEFAULT_DOMAIN
    words: Callable[[], DomainWords] | None = None
    cache: BiasCache | None = None
    fit: TaskCalibration | None = None

    def fit_for(self, selection: str) -> TaskCalibration | None:
        """The task's fitted calibration, if it was fitted for this selection."""
        return self.fit if self.fit is not None and self.fit.selection == selection else None


class Calibrator(ABC):
    """One calibration method. Set-based subclasses estimate a bias per demonstration set from queries of their
    own under that set's demonstrations; a subclass that names its method registers under that ``name``
    (``calibrator_for`` builds it)."""

    name: ClassVar[str]
    methods: ClassVar[dict[str, type[Calibrator]]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a subclass of a method, or a base without a name, registers nothing
            if cls.name in Calibrator.methods:
                raise TypeError(f"calibration method {cls.name!r} is already {Calibrator.methods[cls.name]}")
            Calibrator.methods[cls.name] = cls

    def __init__(self, cache: BiasCache | None = None) -> None:
        self.cache = cache

    @classmethod
    def build(cls, sources: CalibrationSources) -> Calibrator:
        """This method's calibrator for a request."""
        return cls(sources.cache)

    @abstractmethod
    def calibration_prompts(self, builder: PromptBuilder, prompts: Sequence[Prompt], retriever: Retriever,
                            seed: int) -> CalibrationPrompts:
        """Render and tokenize the calibration prompts of a batch's prompts (CPU work: off the event loop)."""

    def from_fit(self, calibration: CalibrationPrompts, got: Sequence[str]) -> list[bool]:
        """Per input, whether the task's fit calibrated it (``got``: the calibration each input got). Only
        fitted estimates are the fit's; the methods a client names are not."""
        return [name == "batch:fitted" for name in got]

    def _estimate(self, builder: PromptBuilder, demo_sets: list[DemoSet], chosen: Sequence[int],
                  targets: list[int], key: Callable[[DemoSet], Hashable],
                  queries: Callable[[DemoSet], list[dict[str, str]]], pooling: float = 0.0) -> CalibrationPrompts:
        """The prompts of the ``chosen`` sets whose estimate (under ``key``) is not cached: each of the set's
        ``queries`` under its demonstrations, as long as it fits the window."""
        cached: dict[int, np.ndarray] = {}
        keys: dict[int, Hashable] = {}
        rendered: list[tuple[int, list[int]]] = []
        for set_index in chosen:
            rows = demo_sets[set_index]
            set_key = key(rows)
            hit = self.cache.get(set_key) if self.cache is not None else None
            if hit is not None:
                cached[set_index] = hit
                continue
            keys[set_index] = set_key
            for query in queries(rows):
                ids = builder.tokenize(builder.render(query, rows))
                # A random-word string may not fit beside long demos; and a content-free "" without
                # demonstrations, where the template puts no text around it, is an empty prompt no engine takes.
                if 0 < len(ids) <= builder.max_prompt_tokens:
                    rendered.append((set_index, ids))
        return CalibrationPrompts(demo_sets=demo_sets, prompts=rendered, cached=cached, cache_keys=keys,
                                  targets=targets, pooling=pooling)

    def _content_free(self, builder: PromptBuilder, demo_sets: list[DemoSet]) -> CalibrationPrompts:
        """The three content-free inputs under every set."""
        every = list(range(len(demo_sets)))
        queries = content_free_queries(builder.template.fields)
        return self._estimate(builder, demo_sets, every, every, lambda rows: (self.name, len(queries), None, rows),
                              lambda _rows: queries)

    def biases(self, calibration: CalibrationPrompts, distributions: Sequence[np.ndarray]) -> dict[DemoSet, np.ndarray]:
        """Each target set's bias from its calibration prompts' label distributions (or the cache), pooled
        across the batch as the prompts say; new estimates go to the cache."""
        own: dict[int, np.ndarray] = dict(calibration.cached)
        for set_index in dict.fromkeys(j for j, _ in calibration.prompts):
            dists = [d for (j, _), d in zip(calibration.prompts, distributions, strict=True) if j == set_index]
            own[set_index] = estimate_bias(np.stack(dists))
            if self.cache is not None and set_index in calibration.cache_keys:
                self.cache.put(calibration.cache_keys[set_index], own[set_index])
        targets = calibration.targets
        if calibration.pooling == 0.0:
            # A calibrated set gets its own estimate or none (its strings may all exceed the window), never its
            # companions'; only sets that ``max_sets`` left out take the batch's mean.
            calibrated = set(calibration.cached) | set(calibration.cache_keys)
            biases = {j: own[j] for j in targets if j in own}
            left_out = [j for j in targets if j not in calibrated]
            if left_out:
                biases.update(pool_biases(own, left_out, 0.0))
            return {calibration.demo_sets[j]: bias for j, bias in biases.items()}
        pooled = pool_biases(own, targets, calibration.pooling)
        return {calibration.demo_sets[j]: bias for j, bias in pooled.items()}

    def calibrate(self, calibration: CalibrationPrompts, distributions: Sequence[np.ndarray],
                  prompts: Sequence[Prompt], inputs: Sequence[np.ndarray]) -> list[Calibrated]:
        """Each input's calibrated distribution, from its uncalibrated one (``inputs``) and the calibration
        prompts' distributions; an input whose demonstration set got no bias stays as it was."""
        biases = self.biases(calibration, distributions)
        out: list[Calibrated] = []
        for prompt, raw in zip(prompts, inputs, strict=True):
            bias = biases.get(tuple(prompt.demo_rows))
            out.append((apply_bias(raw, bias), self.name) if bias is not None else (raw, "none"))
        return out


class NoCalibration(Calibrator):
    """Uncalibrated: no extra prompts, no biases."""

    name = "none"

    def calibration_prompts(self, builder: PromptBuilder, prompts: Sequence[Prompt], retriever: Retriever,
                            seed: int) -> CalibrationPrompts:
        return CalibrationPrompts()


class ContextualCalibrator(Calibrator):
    """Zhao et al. 2021: the content-free inputs under every demonstration set."""

    name = "contextual"

    def calibration_prompts(self, builder: PromptBuilder, prompts: Sequence[Prompt], retriever: Retriever,
                            seed: int) -> CalibrationPrompts:
        return self._content_free(builder, demo_sets_of(prompts))


class DomainCalibrator(Calibrator):
    """Fei et al. 2023: strings of random in-domain words under each demonstration set, as ``settings`` say.

    A set every input shares (random selection) draws ``shared_set_samples``, others ``samples``, seeded by the
    request seed and the set itself (reproducible whatever else is in the batch). Sets whose labels are
    evidence about the query (kNN) are left alone when ``calibrate_knn`` is off; prompts without
    demonstrations are still calibrated. Without in-domain text yet it falls back to content-free inputs
    rather than skip calibrating."""

    name = "domain"

    def __init__(self, settings: DomainSettings = DEFAULT_DOMAIN, words: DomainWords | None = None,
                 cache: BiasCache | None = None) -> None:
        super().__init__(cache)
        self.settings = settings
        self.words = words

    @classmethod
    def build(cls, sources: CalibrationSources) -> Calibrator:
        return cls(sources.domain, sources.words() if sources.words is not None else None, sources.cache)

    def calibration_prompts(self, builder: PromptBuilder, prompts: Sequence[Prompt], retriever: Retriever,
                            seed: int) -> CalibrationPrompts:
        demo_sets = demo_sets_of(prompts)
        words = self.words
        if words is None or words.empty:
            return self._content_free(builder, demo_sets)
        settings = self.settings
        samples = settings.samples_for(shared_set=retriever.shares_one_set)
        chosen = _spread(demo_sets, settings.max_sets)
        targets = list(range(len(demo_sets)))
        if retriever.label_evidence and not settings.calibrate_knn:
            chosen = [j for j in chosen if not demo_sets[j]]
            targets = chosen
        return self._estimate(builder, demo_sets, chosen, targets, lambda rows: (self.name, samples, seed, rows),
                              lambda rows: words.sample(samples, [seed, *rows]), settings.pooling)


def demo_ids_of(builder: PromptBuilder, prompt: Prompt) -> tuple[str, ...]:
    """The ids of a prompt's demonstrations, in prompt order."""
    return tuple(builder.pool.ids[row] for row in prompt.demo_rows)


def fitted_for(fit: TaskCalibration | None, builder: PromptBuilder,
               prompts: Sequence[Prompt]) -> list[CountCalibration | None]:
    """Per prompt, the task's fitted calibration that covers its demonstrations (None: none does)."""
    if fit is None:
        return [None] * len(prompts)
    return [fit.for_demonstrations(demo_ids_of(builder, p)) for p in prompts]


@dataclass(frozen=True)
class FittedCalibrationPrompts(CalibrationPrompts):
    """Per input, the task's fitted calibration it may use (None: none fits its demonstrations)."""

    fitted: list[CountCalibration | None] = field(default_factory=list)


class BatchCalibrator(Calibrator):
    """Zhou et al. 2024: the bias is the mean of the batch's own uncalibrated distributions, so it needs no
    extra prompt. A lone input has no batch: it takes the task's fitted estimate for its count (the mean
    over held-back examples) when the task was fitted for this selection, and otherwise stays uncalibrated.
    What a batch gets depends on its companions: the default (``auto``) never uses it that way."""

    name = "batch"

    def __init__(self, cache: BiasCache | None = None, fit: TaskCalibration | None = None) -> None:
        super().__init__(cache)
        self.fit = fit

    @classmethod
    def build(cls, sources: CalibrationSources) -> Calibrator:
        return cls(sources.cache, sources.fit_for(sources.selection))

    def calibration_prompts(self, builder: PromptBuilder, prompts: Sequence[Prompt], retriever: Retriever,
                            seed: int) -> CalibrationPrompts:
        return FittedCalibrationPrompts(fitted=fitted_for(self.fit, builder, prompts))

    def calibrate(self, calibration: CalibrationPrompts, distributions: Sequence[np.ndarray],
                  prompts: Sequence[Prompt], inputs: Sequence[np.ndarray]) -> list[Calibrated]:
        if len(inputs) >= 2:
            bias = estimate_bias(np.stack(inputs))
            return [(apply_bias(raw, bias), self.name) for raw in inputs]
        assert isinstance(calibration, FittedCalibrationPrompts)
        out: list[Calibrated] = []
        for fitted, raw in zip(calibration.fitted, inputs, strict=True):
            if fitted is None or fitted.held_back_mean is None:
                out.append((raw, "none"))
            else:
                out.append((apply_bias(raw, fitted.held_back_mean), "batch:fitted"))
        return out


@dataclass(frozen=True)
class AutoCalibrationPrompts(CalibrationPrompts):
    """The default's calibration work: per input, the fitted count calibration it gets (None: the unfitted
    default), and per prompt method (or "unfitted") the inputs it calibrates and its prompts (``prompts``: all
    of them, in that order)."""

    assigned: list[CountCalibration | None] = field(default_factory=list)
    parts: dict[str, tuple[list[int], CalibrationPrompts]] = field(default_factory=dict)


class _NamespacedCache(BiasCache):
    """A view of a bias cache whose keys are apart from everyone else's: the default's estimates are drawn from
    the task's inputs alone, and must not be served another request's (drawn from recent queries, say)."""

    def __init__(self, cache: BiasCache, namespace: str) -> None:  # keeps no entries of its own
        self._cache, self._namespace = cache, namespace

    def get(self, key: Hashable) -> np.ndarray | None:
        return self._cache.get((self._namespace, key))

    def put(self, key: Hashable, bias: np.ndarray) -> None:
        self._cache.put((self._namespace, key), bias)

    def __len__(self) -> int:
        return len(self._cache)


class AutoCalibrator(Calibrator):
    """The default: each input gets what the task's fit chose for its count (the nearest fitted count), with
    the fit's temperature; inputs of a task not fitted for this selection get ``UNFITTED_DOMAIN``. What an
    input gets depends on the task's pool and fit alone, never on the other inputs of its request."""

    name = "auto"

    def __init__(self, sources: CalibrationSources) -> None:
        cache = _NamespacedCache(sources.cache, self.name) if sources.cache is not None else None
        super().__init__(cache)
        self.fit = sources.fit_for(sources.selection)
        words = sources.words() if sources.words is not None else None
        self.unfitted = DomainCalibrator(UNFITTED_DOMAIN, words, cache)
        # Who calibrates by prompts: the unfitted default, and the prompt methods a fit may choose (for a shared
        # demonstration set), as they were fitted.
        self.by_prompts: dict[str, Calibrator] = {"unfitted": self.unfitted,
                                                  "contextual": ContextualCalibrator(cache),
                                                  "domain": DomainCalibrator(DEFAULT_DOMAIN, words, cache)}

    @classmethod
    def build(cls, sources: CalibrationSources) -> Calibrator:
        return cls(sources)

    def from_fit(self, calibration: CalibrationPrompts, got: Sequence[str]) -> list[bool]:
        """The inputs the fit covers (their count's fitted method and temperature), not the unfitted default's."""
        assert isinstance(calibration, AutoCalibrationPrompts)
        return [chosen is not None for chosen in calibration.assigned]

    def calibration_prompts(self, builder: PromptBuilder, prompts: Sequence[Prompt], retriever: Retriever,
                            seed: int) -> CalibrationPrompts:
        # An input the fit does not cover (a task not fitted for this selection; a shared set other than the
        # one fitted: another seed, a pool that has changed since) gets the unfitted default.
        assigned = fitted_for(self.fit, builder, prompts)
        rows_of = {method: [i for i, chosen in enumerate(assigned)
                            if (chosen.method if chosen is not None else "unfitted") == method]
                   for method in self.by_prompts}
        parts = {method: (rows, self.by_prompts[method].calibration_prompts(builder, [prompts[i] for i in rows],
                                                                             retriever, seed))
                 for method, rows in rows_of.items() if rows}
        return AutoCalibrationPrompts(prompts=[p for _, part in parts.values() for p in part.prompts],
                                      assigned=assigned, parts=parts)

    def calibrate(self, calibration: CalibrationPrompts, distributions: Sequence[np.ndarray],
                  prompts: Sequence[Prompt], inputs: Sequence[np.ndarray]) -> list[Calibrated]:
        assert isinstance(calibration, AutoCalibrationPrompts)
        by_prompts: dict[int, Calibrated] = {}
        offset = 0
        for method, (rows, part) in calibration.parts.items():
            own = distributions[offset:offset + len(part.prompts)]
            offset += len(part.prompts)
            results = self.by_prompts[method].calibrate(part, own, [prompts[i] for i in rows],
                                                        [inputs[i] for i in rows])
            by_prompts.update(zip(rows, results, strict=True))
        out: list[Calibrated] = []
        for i, (raw, chosen) in enumerate(zip(inputs, calibration.assigned, strict=True)):
            if chosen is None:
                out.append(by_prompts.get(i, (raw, "none")))
            elif chosen.needs_prompts():
                probs, got = by_prompts[i]
                out.append((chosen.with_temperature(probs), got))
            else:  # a fitted batch calibration is the held-back mean: "batch:fitted", as a lone input's
                out.append((chosen.apply(raw), "batch:fitted" if chosen.method == "batch" else chosen.method))
        return out


def calibrator_for(method: Calibration, sources: CalibrationSources | None = None) -> Calibrator:
    """The calibrator of a method for a request drawing on ``sources``."""
    try:
        method_class = Calibrator.methods[method]
    except KeyError:
        raise ValueError(f"unknown calibration {method!r}") from None
    return method_class.build(sources or CalibrationSources())
