"""Predict: plan prompts off the event loop, score them on the shared engine, calibrate, answer."""

from __future__ import annotations

import logging

import numpy as np
from anyio import to_thread

from controller.allocator import BudgetInfeasibleError
from controller.calibration import DEFAULT_DOMAIN, REFERENCE_DOMAIN, DomainSettings
from controller.meta import MetaController
from controller.planning import (
    BudgetTooSmallError,
    InputTooLongError,
    PlannedPrompt,
    PromptBuilder,
    plan_batch,
    plan_rows,
    select_rows,
    similarities_for,
)
from controller.predict import BatchResult, CalibrationPlan, plan_calibration, predict_batch
from controller.retrieval import shares_one_set
from controller.templates import PromptTemplate, TemplateError
from controller.training import features_for
from service.errors import APIError
from service.pools import TaskPool
from service.protocol import PredictionObject, PredictRequest, PredictResponse, UsageObject
from service.serving_controller import load_controller
from service.serving_tasks import TaskServing, prompt_builder, task_template
from service.state import AppState, Runtime

logger = logging.getLogger(__name__)


def domain_settings(request: PredictRequest) -> DomainSettings:
    options = request.domain_calibration
    if options == "reference":
        return REFERENCE_DOMAIN
    if options == "default":
        return DEFAULT_DOMAIN
    return options.settings()


class PredictServing:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.tasks = TaskServing(state)

    def _validate(self, request: PredictRequest, template: PromptTemplate) -> list[dict[str, str]]:
        settings = self.state.settings
        if len(request.inputs) > settings.max_inputs:
            raise APIError(413, f"{len(request.inputs)} inputs in one request; at most {settings.max_inputs} are "
                           "allowed, split the batch", "too_many_inputs", "inputs")
        if isinstance(request.demos, int) and request.demos > settings.max_demos:
            raise APIError(400, f"demos={request.demos} is more than the limit of {settings.max_demos}",
                           "invalid_value", "demos")
        queries: list[dict[str, str]] = []
        for index, value in enumerate(request.inputs):
            try:
                query = template.normalize_input(value)
            except TemplateError as exc:
                raise APIError(400, f"inputs[{index}]: {exc}", "invalid_input", f"inputs[{index}]") from exc
            size = sum(len(v) for v in query.values())
            if size > settings.max_input_chars:
                raise APIError(413, f"inputs[{index}] has {size} characters; the limit is "
                               f"{settings.max_input_chars}", "input_too_large", f"inputs[{index}]")
            queries.append(query)
        return queries

    def _plan(self, name: str, request: PredictRequest, runtime: Runtime
              ) -> tuple[PromptBuilder, list[PlannedPrompt], CalibrationPlan, TaskPool, list[str]]:
        """Everything CPU-bound before the engine: runs in a worker thread."""
        task = self.tasks.get_record(name)
        template = task_template(task)
        queries = self._validate(request, template)
        pool = self.state.pools.get(task, template)
        default_k = task.default_k if task.default_k is not None else self.state.settings.default_k
        controller = load_controller(self.state, task.id) if request.demos == "auto" else None
        k = request.demos if isinstance(request.demos, int) else default_k
        budget = request.budget.max_prompt_tokens if request.budget else None
        embeddings = None
        # Retrieval and the controller's features need the inputs' embeddings; one shared set does not.
        if ((k > 0 and not shares_one_set(request.selection)) or controller is not None) and len(pool.labeled):
            embeddings = runtime.embedder.embed([template.embedding_text(q) for q in queries])
        scorer = runtime.scorer
        builder = prompt_builder(task, template, pool.labeled, scorer)
        try:
            if controller is not None and embeddings is not None:
                planned = self._plan_with_controller(controller, builder, queries, embeddings, task.labels,
                                                     request, budget)
            else:
                planned = plan_batch(builder, queries, embeddings, [k] * len(queries), request.selection,
                                     request.seed, budget)
        except InputTooLongError as exc:
            raise APIError(413, str(exc), "context_length_exceeded", f"inputs[{exc.index}]") from exc
        except (BudgetTooSmallError, BudgetInfeasibleError) as exc:
            raise APIError(400, str(exc), "budget_too_small", "budget.max_prompt_tokens") from exc
        words = pool.words_with_recent(template.fields) if request.calibration == "domain" else pool.domain_words
        pool.remember(queries)  # bounded; nothing unless ICL_DOMAIN_RECENT_QUERIES is set
        calibration = plan_calibration(builder, planned, request.calibration, words, request.seed,
                                       domain_settings(request), pool.biases, request.selection)
        return builder, planned, calibration, pool, task.labels

    @staticmethod
    def _plan_with_controller(controller: MetaController, builder: PromptBuilder, queries: list[dict[str, str]],
                              embeddings: np.ndarray, labels: list[str], request: PredictRequest,
                              budget: int | None) -> list[PlannedPrompt]:
        """Each input's count from the meta-controller: its expected accuracy at every candidate count,
        priced in that input's prompt tokens at that count (estimated from cached per-demonstration counts),
        spent within the budget if any. Only the chosen prompts are tokenized whole; the window and the
        budget are then enforced on their exact token counts."""
        zero_shot = [builder.zero_shot_tokens(q) for q in queries]
        similarities = similarities_for(builder, len(queries), embeddings)
        expected = controller.predict_proba(features_for(builder, queries, embeddings, labels, zero_shot,
                                                         similarities))
        options = [select_rows(builder, similarities, [int(k)] * len(queries), request.selection, request.seed)
                   for k in controller.candidate_k_]
        costs = np.array([[zero_shot[i] + builder.demo_tokens(option[i]) for option in options]
                          for i in range(len(queries))])
        choice = controller.choose(expected, costs, budget)
        rows = [options[j][i] for i, j in enumerate(choice)]
        return plan_rows(builder, queries, similarities, rows, budget, request.selection)

    async def predict(self, name: str, request: PredictRequest) -> PredictResponse:
        runtime = self.state.require_runtime()
        builder, planned, calibration, pool, labels = await to_thread.run_sync(self._plan, name, request, runtime)
        with self.state.admit(len(planned) + len(calibration.prompts)):
            try:
                result = await predict_batch(builder, planned, calibration, labels, runtime.scorer, pool.biases)
            except Exception as exc:  # the request was valid and fully checked: what failed is the engine
                logger.exception("scoring failed")
                raise APIError(503, f"the engine failed to score this request ({type(exc).__name__}); retry "
                               "later", "engine_error", type="service_unavailable",
                               headers={"Retry-After": "5"}) from exc
        self._record_metrics(result)
        return PredictResponse(
            model=runtime.scorer.model_name,
            predictions=[
                PredictionObject(
                    label=p.label, probs=p.probs, uncalibrated_probs=p.uncalibrated_probs, k=len(p.demo_rows),
                    demo_ids=[pool.labeled.ids[r] for r in p.demo_rows], prompt_tokens=p.prompt_tokens,
                    prompt=p.prompt if request.include_prompt else None,
                )
                for p in result.predictions
            ],
            usage=UsageObject(
                prompt_tokens=result.usage.prompt_tokens, calibration_tokens=result.usage.calibration_tokens,
                calibration_cached_tokens=result.usage.calibration_cached_tokens,
                total_tokens=result.usage.total_tokens, cached_tokens=result.usage.cached_tokens,
            ),
        )

    def _record_metrics(self, result: BatchResult) -> None:
        metrics = self.state.metrics
        metrics.prompt_tokens.inc(result.usage.prompt_tokens)
        metrics.calibration_tokens.inc(result.usage.calibration_tokens)
        metrics.cached_tokens.inc(result.usage.cached_tokens)
        metrics.predicted_inputs.inc(len(result.predictions))
        for prediction in result.predictions:
            metrics.demos_per_input.observe(len(prediction.demo_rows))
