"""Pydantic models of the HTTP API (docs/api.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from controller.domain import DEFAULT_DOMAIN, REFERENCE_DOMAIN, DomainSettings
from controller.predictor import PredictOptions

TASK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
EXAMPLE_ID_PATTERN = r"^[^/\x00]{1,128}$"  # usable as a path segment
# What PromptTemplate.parse accepts, for clients generated from the schema: literal text (braces doubled),
# fields {name} (ASCII identifiers, no format spec or conversion), at least one input field, and {label}
# once, at the very end.
_LITERAL = r"(?:[^{}\x00]|\{\{|\}\})"
_INPUT_FIELD = r"\{(?!label\})[A-Za-z_][A-Za-z0-9_]*\}"
TEMPLATE_PATTERN = rf"^(?:{_LITERAL}|{_INPUT_FIELD})*{_INPUT_FIELD}(?:{_LITERAL}|{_INPUT_FIELD})*\{{label\}}$"
# Seeds are JSON numbers: beyond 2^53 - 1 most clients (JavaScript's, any float parser) cannot write them exactly.
MAX_SEED = 2**53 - 1


def _storable(text: str) -> str:
    """Reject what no tokenizer or database takes: lone UTF-16 surrogates and NUL characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no lone surrogate escapes)") from exc
    if "\x00" in text:
        raise ValueError("text must not contain NUL characters")
    return text


def _whole_number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _whole(value: object) -> object:
    """JSON Schema's integers include 2.0: a float without a fractional part, alone or in a list (the API's
    integers nest no deeper), becomes an int before the strict checks (which still refuse strings, booleans and
    2.5). Not recursive: a body may nest lists hundreds deep."""
    if isinstance(value, list):
        return [_whole_number(item) for item in value]
    return _whole_number(value)


def _utc(value: object) -> object:
    """SQLite hands back naive datetimes; the store writes UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


NO_NUL = r"^[^\x00]*$"
Text = Annotated[StrictStr, AfterValidator(_storable), Field(json_schema_extra={"pattern": NO_NUL})]
# Labels and verbalizers need a character that is not white space (Python's str.isspace: the service strips).
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
LABEL_PATTERN = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"
LabelText = Annotated[Text, Field(min_length=1, max_length=256, json_schema_extra={"pattern": LABEL_PATTERN})]
# An input's fields by name; the schema says no other key may appear (patternProperties alone would allow any).
TextMap = Annotated[dict[Text, Text], Field(json_schema_extra={"additionalProperties": False})]
InputValue = Text | TextMap


class _Strict(BaseModel):
    """What a client sends: no field the schema does not name, and every value of the type the schema states
    (``true`` for a boolean, not ``1``; a number, not ``"0.5"``; a string, not ``5``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers(cls, value: object) -> object:
        return _whole(value)


class _Open(BaseModel):
    """What the service wrote itself: fields it adds later are kept, not dropped."""

    model_config = ConfigDict(extra="allow")


class TaskCreate(_Strict):
    name: Annotated[str, Field(pattern=TASK_NAME_PATTERN)]
    labels: Annotated[list[LabelText], Field(min_length=2, max_length=100, json_schema_extra={"uniqueItems": True})]
    verbalizers: Annotated[dict[LabelText, LabelText],
                           Field(json_schema_extra={"additionalProperties": False})] | None = Field(
        default=None, description="The words the model produces for each label (default: the label). Each key "
                                  "must be one of `labels`, and no two labels may share a verbalizer.")
    # The pattern is stated for clients; the server checks the same rules itself, with messages that say
    # which rule a template breaks (PromptTemplate.parse).
    template: Annotated[Text, Field(min_length=1, max_length=20_000, json_schema_extra={"pattern": TEMPLATE_PATTERN})]
    instruction: Annotated[Text, Field(max_length=20_000)] | None = None
    separator: Annotated[Text, Field(max_length=1_000)] = "\n\n"
    default_k: Annotated[StrictInt, Field(ge=0, le=64)] | None = None


class FixedCountFigures(_Open):
    k: int
    accuracy: float
    mean_prompt_tokens: float
    macro_f1: float | None = Field(default=None, description="Null for fits made before it was reported.")


class ControllerFigures(_Open):
    accuracy: float
    mean_k: float | None = None
    mean_prompt_tokens: float
    macro_f1: float | None = None


class CascadeFigures(ControllerFigures):
    stages: list[int] = Field(description="The counts tried in order.")
    thresholds: list[float] = Field(description="Per stage but the last: the calibrated margin (top probability "
                                    "minus the runner-up's) below which an input goes on to the next stage.")


class ControllerValidation(_Open):
    """Fitted on 80% of the held-back examples, measured on the other 20%: answers as `calibration: "auto"`
    serves them (`calibrated`; uncalibrated in fits made before)."""

    n_train: int
    n_validation: int
    calibrated: bool = False
    fixed: list[FixedCountFigures]
    controller: ControllerFigures
    cascade: CascadeFigures | None = Field(default=None, description="The confidence cascade.")
    combined: ControllerFigures | None = Field(
        default=None, description="The cascade's first stage, then the meta-controller's count for the inputs it "
                                  "sends on.")


class CascadeObject(_Open):
    """The confidence cascade `demos: "auto"` serves, fitted on every held-back example."""

    stages: list[int]
    thresholds: list[float]
    held_back: ControllerFigures = Field(description="Its figures on the held-back examples it was fitted on.")


class ChoiceCandidate(_Open):
    """One option the fit weighed, on the held-back examples."""

    option: str
    macro_f1: float
    mean_prompt_tokens: float
    held_back: int | None = Field(default=None, description="The held-back examples it was judged on (null for "
                                                            "fits made before counts were scored on different "
                                                            "numbers); two options compare on those both had.")
    significantly_below_best: bool


class ChoiceObject(_Open):
    """What `demos: "auto"` serves: the cheapest option whose held-back macro-F1 is not significantly below the
    best's (paired bootstrap, one-sided 5%), replacing the task's default count only where it is significantly
    better, or cheaper and shown to lose at most 0.02; the default count where the evidence is thin (fewer
    than 10 held-back examples per label)."""

    option: str = Field(description='The option, such as "k=1" or "k=0 then k=4".')
    serves_default: bool = Field(description="Whether it is the task's default count.")
    stages: list[int]
    macro_f1: float = Field(description="Its held-back macro-F1: out of sample for its calibration and thresholds, "
                                        "but the figure it was chosen on, so a few points optimistic.")
    macro_f1_interval: list[float] = Field(description="The 95% bootstrap interval of that macro-F1.")
    mean_prompt_tokens: float
    reason: str = Field(description="One line on why it was chosen.")
    candidates: list[ChoiceCandidate]


class TwinGroupsObject(_Open):
    """Groups of near-twins in the task's labeled pool when it was fitted: two or more examples linked by copies
    (the same text, case and punctuation aside) or near-copies (embedding cosine above `cosine`)."""

    groups: int
    examples: int = Field(description="The labeled examples in some group.")
    by_cosine: bool = Field(description="Whether embeddings were compared too; above 20,000 labeled examples only "
                                        "the texts are.")


class NearTwinsObject(_Open):
    """Held-back examples whose near-twins (embedding cosine above `cosine`: the same text copied, or the same
    story from another source) were left out of the demonstrations they could draw, so that kNN does not
    flatter the fit's estimates; and how many groups of near-twins the pool holds."""

    cosine: float
    held_back_with_twins: int
    pool_rows_left_out: int
    pool_groups: TwinGroupsObject | None = Field(default=None, description="Null for fits made before fits counted "
                                                                           "them.")


class EmbeddingHeadObject(_Open):
    """The embedding head: a logistic regression on the retrieval embeddings of every labeled example; its
    figures are cross-fitted (near-twin groups in one fold), its probabilities tempered on them."""

    examples: int
    temperature: float
    macro_f1: float
    ece: float = Field(description="Expected calibration error of the tempered cross-fitted probabilities, 15 bins.")


class HiddenHeadObject(_Open):
    """The hidden-state head: a logistic regression on the model's last hidden state of each labeled example's
    prompt at `count` kNN demonstrations, joined with its retrieval embedding; its figures are cross-fitted over
    the `examples` it read (near-twin groups in one fold), its probabilities tempered on them."""

    count: int
    examples: int
    temperature: float
    macro_f1: float
    ece: float = Field(description="Expected calibration error of the tempered cross-fitted probabilities, 15 bins.")
    mean_prompt_tokens: float
    others: list[HiddenHeadObject] = Field(default_factory=list, description="The heads the fit made at its other "
                                           "counts, which do not serve; the same figures.")


class ControllerMetadata(_Open):
    model: str
    labels: list[str]
    scikit_learn: str
    pool_version: int
    n_labeled: int | None = Field(default=None, description="Labeled examples the task had when fitted.")
    embedder: str | None = Field(default=None, description="The embedder that made the pool's embeddings, which "
                                 "its heads read: a fit of another embedder is not served (the fit state says "
                                 "\"other_model\") and is fitted again.")


class MethodFigures(_Open):
    """One calibration method on held-back examples it was not fitted on."""

    macro_f1: float
    ece: float = Field(description="Expected calibration error, 10 confidence bins.")
    log_loss: float


class CountCalibrationObject(_Open):
    """What `calibration: "auto"` applies at one count, and how every method compared there."""

    method: str = Field(description='"none", "batch", "affine", "contextual" or "domain".')
    temperature: float
    ece_with_temperature: float = Field(description="The chosen method's validation ECE with its temperature.")
    log_loss_with_temperature: float
    validation: dict[str, MethodFigures]


class CalibrationFitObject(_Open):
    """The task's fitted calibration, for one selection: per candidate count (other counts take the nearest)."""

    selection: str
    counts: dict[str, CountCalibrationObject]


class FitCost(_Open):
    """What the fit's held-back pass cost the engine, the hidden-state engine's reading apart."""

    prompt_tokens: int
    calibration_tokens: int
    computed_tokens: int
    seconds: float
    dtype: str | None = Field(default=None, description="The engine's dtype when it ran (null for older fits).")
    hidden_tokens: int = Field(default=0, description="Prompt tokens the hidden-state engine read for the "
                                                      "hidden-state heads, every count's (0 for older fits).")


def _distinct(counts: list[int]) -> list[int]:
    if len(set(counts)) != len(counts):
        raise ValueError("a count is given more than once; give each count once (at least two distinct counts)")
    return counts


Counts = list[Annotated[StrictInt, Field(ge=0, le=64)]]


class ControllerTrainRequest(_Strict):
    candidate_k: Annotated[Counts, Field(min_length=2, max_length=16, json_schema_extra={"uniqueItems": True}),
                           AfterValidator(_distinct)] = Field(
        default=[0, 1, 2, 4, 16], description="The counts the cascade chains and the controller chooses among.")
    train_size: Annotated[StrictInt, Field(ge=20, le=10_000)] = Field(
        default=110, description="The fit's budget: it spends the engine work of scoring this many held-back "
                                 "examples at every candidate count, scoring the task's default count and the "
                                 "counts below it on more examples and the larger counts on half as many.")
    selection: Literal["knn", "random", "diverse"] = "knn"
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] = 0


class StoredTrainRequest(ControllerTrainRequest):
    """What a stored fit was asked: as a request, except that fits stored before seeds were capped at 2^53 - 1
    may hold a larger one, and fits asked before counts had to be distinct may repeat one."""

    candidate_k: Annotated[Counts, Field(min_length=2, max_length=16)] = Field(
        default=[0, 1, 2, 4, 16], description="The counts the cascade chains and the controller chooses among.")
    seed: Annotated[StrictInt, Field(ge=0)] = 0


class ControllerObject(_Open):
    """A task's fitted meta-controller: how it was trained and how it did on held-back examples."""

    candidate_k: list[int]
    train_size: int
    held_back: dict[str, int] | None = Field(
        default=None, description="Per count, the held-back examples it was scored on: more at the task's default "
                                  "count and below, where evidence is cheap (null for fits made before).")
    selection: str
    seed: int
    validation: ControllerValidation
    calibration: CalibrationFitObject | None = Field(
        default=None, description="The task's fitted calibration (null for a fit made before they had one).")
    cascade: CascadeObject | None = Field(
        default=None, description="The task's confidence cascade (null for a fit made before they had one).")
    choice: ChoiceObject | None = Field(
        default=None, description="What the default request is served with, what it is expected to score, and why "
                                  "(null for a fit made before fits said).")
    near_twins: NearTwinsObject | None = Field(
        default=None, description="The near-twins the fit left out of held-back examples' demonstrations (null for "
                                  "a fit made before it did; zeros for a shared demonstration set).")
    embedding_head: EmbeddingHeadObject | None = Field(
        default=None, description="The embedding head the fit made, with its cross-fitted figures (null where it "
                                  "made none: a pool of one label or one near-twin group, or a fit made before).")
    hidden_head: HiddenHeadObject | None = Field(
        default=None, description="The hidden-state head the fit made, with its cross-fitted figures (null where it "
                                  "made none: an engine that reads no hidden states, or a fit made before).")
    cost: FitCost | None = None
    request: StoredTrainRequest | None = Field(
        default=None, description="What the fit was asked (an automatic refit asks the same; null for older fits).")
    created_at: str = Field(description="When it was fitted (ISO 8601, UTC).")
    metadata: ControllerMetadata
    fit_id: str | None = Field(default=None, description="The fit's id, as predictions that it answered carry it.")


class FitState(BaseModel):
    """Where the task's fit (cascade, meta-controller and calibration) stands."""

    state: Literal["none", "running", "fitted", "other_model"] = Field(
        description='"other_model": fitted with another model than the one serving, so `demos: "auto"` and '
                    '`calibration: "auto"` serve the unfitted defaults until it is fitted again (which starts '
                    'by itself when automatic fits are on).')
    pool_version: int | None = Field(description="The pool version the present fit was made on.")
    job_id: str | None = Field(description="The running fit job, while one runs.")
    model: str | None = Field(default=None, description="The model the present fit was made with.")
    fit_id: str | None = Field(default=None, description="The present fit's id, as predictions it answers carry it.")
    expected: str | None = Field(
        default=None, description='What the default request is served with and why, in one line, such as "k=1: 0.68 '
                                  '± 0.05 at 80 tokens; ..." (null without a fit, for a fit made before fits said, '
                                  "for another model's fit, and where the meta-controller serves).")


class TaskObject(BaseModel):
    name: str
    labels: list[str]
    verbalizers: dict[str, str]
    template: str
    instruction: str | None
    separator: str
    default_k: int
    n_examples: int
    n_labeled: int
    controller: ControllerObject | None = None
    fit: FitState
    created_at: AwareDatetime

    @field_validator("created_at", mode="before")
    @classmethod
    def _in_utc(cls, value: object) -> object:
        return _utc(value)


class TaskList(BaseModel):
    tasks: list[TaskObject]


class ExampleIn(_Strict):
    id: Annotated[StrictStr, Field(pattern=EXAMPLE_ID_PATTERN), AfterValidator(_storable)] | None = None
    input: InputValue
    label: LabelText | None = None


class ExamplesAdd(_Strict):
    examples: Annotated[list[ExampleIn], Field(min_length=1)]


class ExamplesAdded(BaseModel):
    added: int
    n_examples: int
    n_labeled: int


class ExampleObject(BaseModel):
    id: str
    input: dict[str, str]
    label: str | None


class ExampleList(BaseModel):
    examples: list[ExampleObject]
    total: int


class ExamplePatch(_Strict):
    label: LabelText | None


class Budget(_Strict):
    max_prompt_tokens: Annotated[StrictInt, Field(ge=1)] | None = None


class DomainCalibrationOptions(_Strict):
    """How `calibration: "domain"` spends engine time. Unset fields take the default settings' values."""

    samples: Annotated[StrictInt, Field(ge=1, le=64)] = Field(
        default=DEFAULT_DOMAIN.samples, description="Random in-domain strings per calibrated demonstration set.")
    shared_set_samples: Annotated[StrictInt, Field(ge=1, le=64)] | None = Field(
        default=DEFAULT_DOMAIN.shared_set_samples,
        description="Strings for the one demonstration set random selection gives every input (estimated once "
                    "per set and cached). null = `samples`.")
    pooling: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        default=DEFAULT_DOMAIN.pooling,
        description="Weight of the batch-wide estimate in each demonstration set's bias; 0 = the set's own only.")
    max_sets: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=DEFAULT_DOMAIN.max_sets,
        description="Demonstration sets calibrated per request; the others get the batch-wide estimate. "
                    "null = every set.")
    calibrate_knn: bool = Field(default=True, description="Also calibrate kNN-retrieved demonstrations.")

    def settings(self) -> DomainSettings:
        return DomainSettings(samples=self.samples, shared_set_samples=self.shared_set_samples,
                              pooling=self.pooling, max_sets=self.max_sets, calibrate_knn=self.calibrate_knn)


class PredictOptionsBody(_Strict):
    """How to classify: what a predict request and a batch job share."""

    demos: Literal["auto"] | Annotated[StrictInt, Field(ge=0)] = "auto"
    selection: Literal["knn", "random", "diverse"] = "knn"
    budget: Budget | None = None
    calibration: Literal["auto", "batch", "domain", "contextual", "none"] = Field(
        default="auto",
        description='"auto": what the task\'s fit chose for each input\'s count (before a fit: random selection\'s '
                    'shared set domain-calibrated, kNN sets not); "batch": the mean of the request\'s own inputs; '
                    '"domain": domain-context calibration of the demonstrations served, kNN sets included; '
                    '"contextual": content-free inputs; "none".')
    domain_calibration: Literal["default", "reference"] | DomainCalibrationOptions = Field(
        default="default",
        description='"reference": 20 strings under every demonstration set, as Fei et al. (2023) run it; '
                    '"default": the cheap settings measured in bench/calibration.py; or explicit options. '
                    'Given without `calibration`, it asks for `calibration: "domain"`.')
    include_prompt: bool = False
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] = Field(
        default=0, description="Seed of random selection and of domain-context sampling.")
    decision: Literal["auto", "tokens", "head", "hidden"] = Field(
        default="auto",
        description='Who decides each label: "auto", what the task\'s fit chose (its embedding head first where the '
                    'fit chose it); "tokens", the model\'s label tokens only (no head); "head", the embedding head '
                    'alone: no prompt, no tokens; "hidden", the hidden-state head: a prompt at its fitted count, '
                    "read through the model's last hidden state (409 `no_head` for either before a fit; not with a "
                    "fixed `demos`).")

    @model_validator(mode="after")
    def _domain_options_ask_for_domain(self) -> PredictOptionsBody:
        """Domain-calibration options without a `calibration` ask for domain calibration."""
        if "domain_calibration" in self.model_fields_set and "calibration" not in self.model_fields_set:
            self.calibration = "domain"
        return self

    def domain_settings(self) -> DomainSettings:
        options = self.domain_calibration
        if options == "reference":
            return REFERENCE_DOMAIN
        if options == "default":
            return DEFAULT_DOMAIN
        return options.settings()

    def to_options(self) -> PredictOptions:
        """The predictor's options for this request."""
        return PredictOptions(demos=self.demos, selection=self.selection, calibration=self.calibration,
                              domain=self.domain_settings(), seed=self.seed,
                              max_prompt_tokens=self.budget.max_prompt_tokens if self.budget else None,
                              decision=self.decision)


class PredictRequest(PredictOptionsBody):
    inputs: Annotated[list[InputValue], Field(min_length=1)]


MAX_BATCH_INPUTS = 100_000
ClientId = Annotated[Text, Field(max_length=256)]


class BatchRequest(PredictOptionsBody):
    """A batch job's JSON body: the inputs, optional client ids in the same order, and predict's options."""

    # The count is checked by the service (413 too_many_inputs, as predict's), and stated here for clients.
    inputs: Annotated[list[InputValue], Field(min_length=1, json_schema_extra={"maxItems": MAX_BATCH_INPUTS})]
    ids: Annotated[list[ClientId | None], Field(json_schema_extra={"maxItems": MAX_BATCH_INPUTS})] | None = Field(
        default=None, description="A client id per input, echoed with its result (same length as `inputs`).")

    @model_validator(mode="after")
    def _one_id_per_input(self) -> BatchRequest:
        if self.ids is not None and len(self.ids) != len(self.inputs):
            raise ValueError(f"ids has {len(self.ids)} entries for {len(self.inputs)} inputs")
        return self


class BatchLine(_Strict):
    """One line of a JSON Lines batch body."""

    input: InputValue
    id: ClientId | None = None


BATCH_BODIES = (BatchRequest, BatchLine)


class PredictionObject(BaseModel):
    label: str
    probs: dict[str, float]
    uncalibrated_probs: dict[str, float]
    k: int = Field(description="Demonstrations in the prompt that answered.")
    demo_ids: list[str]
    prompt_tokens: int = Field(description="Over every prompt the input was scored with (every cascade stage).")
    computed_tokens: int = Field(default=0, description="What the engine computed for those prompts, label "
                                 "continuations included, prefix-cache hits excluded: an estimate of the cost, "
                                 "which depends on the cache's state.")
    stages: list[int] = Field(default_factory=list, description="The count of each prompt the input was scored "
                              "with, in order; the last one answered. One entry unless a cascade escalated it.")
    prompt: str | None = None
    calibration: str = Field(description='The calibration this input got: "none", "contextual", "domain", '
                             '"batch", "batch:fitted" (a lone input, the task\'s held-back estimate) or "affine".')
    fit_id: str | None = Field(default=None, description="The task's fit that chose this input's count, whose "
                               "head answered it (`decision` \"head\" or \"hidden\"), or that calibrated it (its "
                               "fitted method under `calibration: \"auto\"`, its held-back estimate for "
                               "`\"batch:fitted\"`); null when no fit took part.")
    decision: Literal["tokens", "head", "hidden"] = Field(
        default="tokens", description='Where the answer came from: "tokens", the model\'s label tokens; "head", the '
                                      "task's embedding head (fitted on its labeled pool, no prompt: `k` 0, `stages` "
                                      "empty, no tokens), which answers first where the fit's choice starts with it; "
                                      '"hidden", the task\'s hidden-state head on its prompt\'s last hidden state.')


class UsageObject(BaseModel):
    prompt_tokens: int
    calibration_tokens: int = Field(description="Tokens the engine computed to estimate label bias (prefix-cache "
                                    "hits excluded).")
    calibration_cached_tokens: int = Field(
        default=0, description="Calibration prompts' tokens served from the prefix cache instead.")
    total_tokens: int
    cached_tokens: int = Field(description="Of total_tokens, those served from vLLM's prefix cache.")
    computed_tokens: int = Field(default=0, description="total_tokens less cached_tokens: what the engine computed.")


class PredictResponse(BaseModel):
    model: str
    demos_policy: Literal["fixed", "default", "cascade", "controller", "head", "hidden"] = Field(
        default="fixed", description='What chose the counts: "fixed" (`demos` was a number), "cascade" or '
        '"controller" (the task\'s fit), "default" (`demos: "auto"` without a fit for this model: the task\'s '
        '`default_k`; `fit` says why), "head" (`decision: "head"`: the embedding head answered every input), '
        '"hidden" (`decision: "hidden"`: the hidden-state head at its fitted count).')
    fit: Literal["none", "fitted", "other_model", "unreadable"] = Field(
        default="none", description='The task\'s fit as this request found it: "other_model" means it was '
        'fitted with another model and is not applied.')
    predictions: list[PredictionObject]
    usage: UsageObject


class AnnotationPlanRequest(_Strict):
    budget: Annotated[StrictInt, Field(ge=1, le=100_000)]
    method: Literal["votek", "ideal", "random", "votek_two_stage"] = "votek"
    seed: Annotated[StrictInt, Field(ge=0, le=MAX_SEED)] = 0
    confidence_demos: Annotated[StrictInt, Field(ge=1, le=64)] = Field(
        default=8, description="votek_two_stage: nearest labeled examples in each confidence prompt.")


class AnnotationPlan(BaseModel):
    ids: list[str]
    method: str
    elapsed_s: float


class JobCreated(BaseModel):
    job_id: str


class BatchProgress(BaseModel):
    total: int = Field(description="Inputs in the job.")
    done: int = Field(description="Inputs with an outcome: a prediction or an error.")
    errors: int = Field(description="Of `done`, inputs that could not be classified.")
    runs: list[dict[str, Any]] = Field(
        description="What the job classified with, at its start and at each resumption: the pool version, the "
                    "fit's state and stamp, and the first input position that run classified.")


JobKind = Literal["controller", "annotation", "batch"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobObject(BaseModel):
    job_id: str
    kind: str = Field(description='"controller" (a fit), "annotation" or "batch".')
    task: str | None = None
    status: JobStatus
    progress: float
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    batch: BatchProgress | None = Field(default=None, description="Batch jobs: their inputs' progress.")
    created_at: AwareDatetime | None = Field(default=None, description="When it was submitted.")
    updated_at: AwareDatetime | None = Field(default=None, description="When its status or progress last changed "
                                             "(a running job's heartbeat too).")

    @field_validator("created_at", "updated_at", mode="before")
    @classmethod
    def _in_utc(cls, value: object) -> object:
        return _utc(value)


class JobList(BaseModel):
    jobs: list[JobObject] = Field(description="Newest first.")
    total: int = Field(description="Jobs that match the filters, over every page.")


class BatchItemError(BaseModel):
    message: str
    code: str


class BatchResultItem(BaseModel):
    index: int = Field(description="The input's position in the job, from 0.")
    id: str | None = Field(description="The client id sent with the input.")
    status: Literal["pending", "succeeded", "failed"]
    prediction: PredictionObject | None = None
    error: BatchItemError | None = None


class BatchResults(BaseModel):
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    total: int
    offset: int
    results: list[BatchResultItem]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "iclserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class ErrorResponse(BaseModel):
    error: ErrorBody
