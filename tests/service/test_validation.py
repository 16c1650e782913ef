"""Validation errors as one message per problem, read against a schema: unions, nested models, lists, the words
for what a schema accepts, and what is said without a schema."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.protocol import BatchRequest, ControllerTrainRequest, PredictRequest, TaskCreate
from service.validation import SchemaView, problems, shown, validation_message


def errors_of(model, raw) -> list[dict]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(raw)
    return caught.value.errors()


def test_a_union_s_options_make_one_problem_unless_one_took_the_value_in():
    view = SchemaView.of_model(PredictRequest)
    union = problems(errors_of(PredictRequest, {"inputs": ["x"], "demos": "4"}), view)
    assert [p.path for p in union] == [("demos",)] and len(union[0].errors) == 2
    nested = problems(errors_of(PredictRequest, {"inputs": ["x"], "domain_calibration": {"samples": 0,
                                                                                       "pooling": 2}}), view)
    assert [p.path for p in nested] == [("domain_calibration", "samples"), ("domain_calibration", "pooling")]
    keyed = problems(errors_of(PredictRequest, {"inputs": [{"text": "a", "other": 5}]}), view)
    assert [p.path for p in keyed] == [("inputs", 0, "other")]


def test_a_model_s_own_schema_says_the_model_s_bounds():
    message, param = validation_message(errors_of(PredictRequest, {"inputs": ["x"], "demos": "4"}),
                                        SchemaView.of_model(PredictRequest))
    assert (message, param) == ('demos: "4" is not accepted: demos is "auto" or an integer of at least 0', "demos")


@pytest.mark.parametrize(("model", "raw", "expected"), [
    (TaskCreate, {"name": "Bad Name", "labels": ["a", "b"], "template": "{text}{label}"},
     'name: "Bad Name" is not accepted: name is a string matching ^[a-z0-9][a-z0-9_-]{0,63}$'),
    (TaskCreate, {"name": "t", "labels": ["a"], "template": "{text}{label}"},
     'labels: ["a"] is not accepted: labels is a list of 2 to 100 distinct items, each a string of 1 to 256 '
     "characters"),
    (TaskCreate, {"name": "t", "labels": ["a", "b"], "template": "{text}{label}", "default_k": 65},
     "default_k: 65 is not accepted: default_k is an integer from 0 to 64 or null"),
    (ControllerTrainRequest, {"candidate_k": [0, 99]},
     "candidate_k[1]: 99 is not accepted: candidate_k[1] is an integer from 0 to 64"),
    (BatchRequest, {"inputs": ["x", "y"], "ids": ["a"]}, "body: ids has 1 entries for 2 inputs"),
])
def test_what_each_kind_of_schema_accepts_in_words(model, raw, expected):
    assert validation_message(errors_of(model, raw), SchemaView.of_model(model))[0] == expected


def test_without_a_schema_pydantic_s_words_are_joined_into_one_problem():
    message, param = validation_message(errors_of(PredictRequest, {"inputs": ["x"], "demos": "4"}))
    assert param == "demos"
    assert message == "demos: \"4\" is not accepted: it should be 'auto' or a valid integer"
    message, param = validation_message(errors_of(PredictRequest, {"inputs": [{"text": 5}]}))
    assert param == "inputs[0].text" and message.startswith("inputs[0].text: 5 is not accepted")


def test_a_shown_value_is_short_ascii_json():
    assert shown("é") == '"\\u00e9"'
    assert shown([1] * 100).endswith("…") and len(shown([1] * 100)) == 61
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert shown(deep) == "a list"
