"""Request models convert themselves into the library's options."""

from controller.domain import DEFAULT_DOMAIN, REFERENCE_DOMAIN, DomainSettings
from controller.predictor import PredictOptions
from service.protocol import PredictRequest


def test_a_bare_request_is_the_default_options():
    assert PredictRequest(inputs=["x"]).to_options() == PredictOptions()


def test_predict_request_to_options():
    options = PredictRequest(inputs=["x"], demos=3, selection="random", calibration="contextual", seed=9,
                             budget={"max_prompt_tokens": 120}).to_options()
    assert options == PredictOptions(demos=3, selection="random", calibration="contextual", domain=DEFAULT_DOMAIN,
                                     seed=9, max_prompt_tokens=120)
    assert PredictRequest(inputs=["x"], budget={}).to_options().max_prompt_tokens is None
    assert PredictRequest(inputs=["x"], domain_calibration="reference").to_options().domain == REFERENCE_DOMAIN
    # Explicit options take the default's values for what they leave out, except calibrate_knn.
    explicit = PredictRequest(inputs=["x"], domain_calibration={"samples": 3}).to_options().domain
    assert explicit == DomainSettings(samples=3, shared_set_samples=DEFAULT_DOMAIN.shared_set_samples,
                                      calibrate_knn=True)
    unshared = PredictRequest(inputs=["x"], domain_calibration={"shared_set_samples": None}).to_options().domain
    assert unshared.samples_for(shared_set=True) == DEFAULT_DOMAIN.samples


def test_whole_floats_are_integers_and_nothing_else_is():
    import pytest
    from pydantic import ValidationError

    from service.protocol import MAX_SEED, ControllerTrainRequest

    request = PredictRequest.model_validate({"inputs": ["x"], "demos": 2.0, "seed": 7.0})
    assert (request.demos, request.seed) == (2, 7) and isinstance(request.seed, int)
    assert ControllerTrainRequest.model_validate({"candidate_k": [0.0, 4]}).candidate_k == [0, 4]
    for bad in (2.5, "2", True):
        with pytest.raises(ValidationError):
            PredictRequest.model_validate({"inputs": ["x"], "seed": bad})
    PredictRequest.model_validate({"inputs": ["x"], "seed": MAX_SEED})
    with pytest.raises(ValidationError):
        PredictRequest.model_validate({"inputs": ["x"], "seed": MAX_SEED + 1})


def test_the_published_template_and_label_patterns_say_what_the_server_checks(tmp_path):
    import re

    from service.protocol import LABEL_PATTERN, TEMPLATE_PATTERN
    from tests.service.support import make_client

    templates = ["Input: {text}\nLabel: {label}", "{a}{{x}}{b}{label}", "{label}", "{text}{label} ",
                 "{label}{text}{label}", "{é}{label}", "{text!r}{label}", "{text:>3}{label}", "{}{label}",
                 "{0}{label}", "x}{text}{label}", "{text}{label}}}", "P: {premise}\nH: {hypothesis}\nL: {label}"]
    with make_client(tmp_path) as c:
        for i, template in enumerate(templates):
            created = c.post("/v1/tasks", json={"name": f"t{i}", "labels": ["a", "b"], "template": template})
            assert created.status_code in (201, 400), created.text
            assert (created.status_code == 201) == bool(re.fullmatch(TEMPLATE_PATTERN, template)), template
    for label in ["positive", " a ", "\t", " ", "\x1f", "\u3000", "\ufeff"]:
        assert bool(label.strip()) == bool(re.fullmatch(LABEL_PATTERN, label)), repr(label)


def test_candidate_counts_are_distinct_as_the_schema_says_except_in_a_stored_fit():
    import pytest
    from pydantic import ValidationError

    from service.protocol import ControllerTrainRequest, StoredTrainRequest

    assert ControllerTrainRequest.model_json_schema()["properties"]["candidate_k"]["uniqueItems"] is True
    for repeated in ([0, 0], [0, 4, 4], [0, 0.0, 2]):
        with pytest.raises(ValidationError, match="more than once"):
            ControllerTrainRequest.model_validate({"candidate_k": repeated})
    assert StoredTrainRequest.model_validate({"candidate_k": [0, 0, 4]}).candidate_k == [0, 0, 4]
