"""The client's typed dictionaries mirror the service's published objects (the client cannot import the
server's models: it installs without them), field for field."""

from __future__ import annotations

from typing import get_type_hints

import pytest

from iclclient import types
from tests.service.support import make_client

MIRRORS = {
    types.Task: "TaskObject", types.ExampleIn: "ExampleIn", types.Example: "ExampleObject",
    types.ExampleList: "ExampleList", types.ExamplesAdded: "ExamplesAdded", types.Prediction: "PredictionObject",
    types.Usage: "UsageObject", types.PredictResponse: "PredictResponse", types.AnnotationPlan: "AnnotationPlan",
    types.Job: "JobObject", types.JobList: "JobList", types.FitState: "FitState",
    types.BatchProgress: "BatchProgress", types.BatchItemError: "BatchItemError",
    types.BatchResultItem: "BatchResultItem", types.BatchResults: "BatchResults",
}


@pytest.fixture(scope="module")
def schemas(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("types")) as client:
        return client.get("/openapi.json").json()["components"]["schemas"]


@pytest.mark.parametrize("typed", list(MIRRORS), ids=lambda t: t.__name__)
def test_the_same_fields_as_the_published_object(typed, schemas):
    assert set(get_type_hints(typed)) == set(schemas[MIRRORS[typed]]["properties"])
