"""Predict: fetch the task's serving context, plan in a worker thread, score on the shared engine, answer."""

from __future__ import annotations

import logging

from anyio import to_thread

from controller.errors import (
    BudgetTooSmallError,
    EmptyPromptError,
    InputTooLongError,
    NoHeadError,
    UnplannableInputError,
)
from controller.predictor import PredictionPlan, PredictOptions, Predictor, PredictResult
from controller.templates import PromptTemplate
from service.contexts import TaskContext
from service.errors import APIError
from service.inputs import template_input
from service.protocol import PredictionObject, PredictRequest, PredictResponse, UsageObject
from service.state import AppState, Runtime, TextEmbedder

logger = logging.getLogger(__name__)


def check_demos(demos: int | str, max_demos: int, decision: str = "auto") -> None:
    """A fixed count over the service's limit is 400 (the schema states the limit), and so is one beside
    ``decision: "head"``, which answers without demonstrations, or ``"hidden"``, which reads prompts at the count
    its head was fitted at."""
    if isinstance(demos, int) and demos > max_demos:
        raise APIError(400, f'demos: {demos} is not accepted: demos is "auto" or an integer from 0 to {max_demos}',
                       "invalid_value", "demos")
    if isinstance(demos, int) and decision == "head":
        raise APIError(400, f'decision "head" answers without demonstrations, so demos: {demos} cannot go with it; '
                       'leave demos out (or "auto")', "invalid_value", "decision")
    if isinstance(demos, int) and decision == "hidden":
        raise APIError(400, f'decision "hidden" reads prompts at the count its head was fitted at, so demos: {demos} '
                       'cannot go with it; leave demos out (or "auto")', "invalid_value", "decision")


def planning_error(exc: UnplannableInputError | BudgetTooSmallError | NoHeadError) -> APIError:
    """What the client is told when its inputs cannot be planned: the input, or the budget, at fault."""
    if isinstance(exc, InputTooLongError):
        return APIError(413, str(exc), "context_length_exceeded", f"inputs[{exc.index}]")
    if isinstance(exc, EmptyPromptError):
        return APIError(400, str(exc), "empty_prompt", f"inputs[{exc.index}]")
    if isinstance(exc, BudgetTooSmallError):
        return APIError(400, str(exc), "budget_too_small", "budget.max_prompt_tokens")
    if isinstance(exc, NoHeadError):
        return APIError(409, str(exc), "no_head", "decision")
    return APIError(400, str(exc), "invalid_input", f"inputs[{exc.index}]")


def plan_predictions(context: TaskContext, options: PredictOptions, queries: list[dict[str, str]],
                     embedder: TextEmbedder) -> tuple[Predictor, PredictionPlan]:
    """Retrieval, counts, prompts and calibration planned for these queries: CPU work, for a worker thread.
    Raises the controller's UnplannableInputError and BudgetTooSmallError."""
    predictor = context.predictor(options)
    embeddings = embedder.embed(predictor.embedding_texts(queries)) if predictor.needs_embeddings else None
    return predictor, predictor.plan(queries, embeddings)


def prediction_objects(context: TaskContext, predictor: Predictor, result: PredictResult,
                       include_prompt: bool) -> list[PredictionObject]:
    """The answers; each carries the id of the task's fit where the fit took part in it: it chose the counts
    (``demos: "auto"`` served by its cascade or controller), one of its heads answered (``decision`` "head" or
    "hidden", forced or not) or it calibrated the input (its fitted method for the input's count under
    ``"auto"``, its held-back estimate for a lone input under ``"batch"``)."""
    ids = context.pool.labeled.ids
    chose_counts = predictor.demos_policy in ("cascade", "controller")
    return [
        PredictionObject(
            label=p.label, probs=p.probs, uncalibrated_probs=p.uncalibrated_probs, k=len(p.demo_rows),
            demo_ids=[ids[r] for r in p.demo_rows], prompt_tokens=p.prompt_tokens,
            computed_tokens=p.computed_tokens, stages=list(p.stages),
            prompt=p.prompt if include_prompt and p.decision != "head" else None, calibration=p.calibration,
            decision=p.decision,
            fit_id=context.fit_id if chose_counts or p.fitted_calibration or p.decision != "tokens" else None,
        )
        for p in result.predictions
    ]


class PredictServing:
    def __init__(self, state: AppState) -> None:
        self.state = state

    async def create_predictions(self, name: str, request: PredictRequest) -> PredictResponse:
        runtime = self.state.require_runtime()
        context, predictor, plan = await to_thread.run_sync(self._plan, name, request, runtime)
        # A cascade's later stages score at most every input again, once per stage.
        stages = len(predictor.cascade.stages) if predictor.cascade is not None else 1
        with self.state.admit(plan.n_prompts + (stages - 1) * len(plan.prompts)):
            try:
                result = await predictor.run(plan, runtime.scorer)
            except Exception as exc:  # the request was valid and fully checked: what failed is the engine
                logger.exception("scoring failed")
                raise APIError(503, f"the engine failed to score this request ({type(exc).__name__}); retry "
                               "later", "engine_error", type="service_unavailable",
                               headers={"Retry-After": "5"}) from exc
        self._record_metrics(result)
        return self._response(context, request, predictor, result, runtime.scorer.model_name)

    def _plan(self, name: str, request: PredictRequest, runtime: Runtime
              ) -> tuple[TaskContext, Predictor, PredictionPlan]:
        """Everything CPU-bound before the engine: runs in a worker thread."""
        context = self.state.contexts.get(name, runtime.scorer)
        queries = self._queries(request, context.template)
        try:
            predictor, plan = plan_predictions(context, request.to_options(), queries, runtime.embedder)
        except (UnplannableInputError, BudgetTooSmallError, NoHeadError) as exc:
            raise planning_error(exc) from exc
        context.pool.remember(queries)  # bounded; nothing unless ICL_DOMAIN_RECENT_QUERIES is set
        return context, predictor, plan

    def _queries(self, request: PredictRequest, template: PromptTemplate) -> list[dict[str, str]]:
        """The request's inputs as the template's fields, within the service's limits."""
        settings = self.state.settings
        if len(request.inputs) > settings.max_inputs:
            raise APIError(413, f"{len(request.inputs)} inputs in one request; at most {settings.max_inputs} are "
                           "allowed, split the batch", "too_many_inputs", "inputs")
        check_demos(request.demos, settings.max_demos, request.decision)
        return [template_input(value, template, settings.max_input_chars, f"inputs[{index}]")
                for index, value in enumerate(request.inputs)]

    @staticmethod
    def _response(context: TaskContext, request: PredictRequest, predictor: Predictor, result: PredictResult,
                  model: str) -> PredictResponse:
        return PredictResponse(
            model=model,
            demos_policy=predictor.demos_policy,
            fit=context.fit_state,
            predictions=prediction_objects(context, predictor, result, request.include_prompt),
            usage=UsageObject(
                prompt_tokens=result.usage.prompt_tokens, calibration_tokens=result.usage.calibration_tokens,
                calibration_cached_tokens=result.usage.calibration_cached_tokens,
                total_tokens=result.usage.total_tokens, cached_tokens=result.usage.cached_tokens,
                computed_tokens=result.usage.computed_tokens,
            ),
        )

    def _record_metrics(self, result: PredictResult) -> None:
        metrics = self.state.metrics
        metrics.prompt_tokens.inc(result.usage.prompt_tokens)
        metrics.calibration_tokens.inc(result.usage.calibration_tokens)
        metrics.cached_tokens.inc(result.usage.cached_tokens)
        metrics.predicted_inputs.inc(len(result.predictions))
        for prediction in result.predictions:
            metrics.demos_per_input.observe(len(prediction.demo_rows))
