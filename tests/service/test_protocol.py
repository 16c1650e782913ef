"""Request models convert themselves into the library's options."""

from controller.calibration import DEFAULT_DOMAIN, REFERENCE_DOMAIN, DomainSettings
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
