"""The OpenAPI document this server publishes: FastAPI's, without the answers it never gives, with the batch
route's bodies (which it reads itself) and with the request limits of this server's settings."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.config import Settings
from service.protocol import BATCH_BODIES


def _state_limits(components: dict[str, Any], settings: Settings) -> None:
    """The request limits this server's settings enforce, stated where a client reads them (the models carry
    only the fixed ones)."""

    def input_strings(schema: dict[str, Any]) -> None:
        for option in schema["anyOf"]:  # a string, or an object of strings
            (option if option["type"] == "string" else next(iter(option["patternProperties"].values())))[
                "maxLength"] = settings.max_input_chars

    def integer(schema: dict[str, Any]) -> dict[str, Any]:
        """The integer option of a field that also takes "auto" or null."""
        return next(option for option in schema["anyOf"] if option["type"] == "integer")

    predict = components["PredictRequest"]["properties"]
    predict["inputs"]["maxItems"] = settings.max_inputs
    input_strings(predict["inputs"]["items"])
    integer(predict["demos"])["maximum"] = settings.max_demos
    batch = components["BatchRequest"]["properties"]
    input_strings(batch["inputs"]["items"])
    integer(batch["demos"])["maximum"] = settings.max_demos
    input_strings(components["BatchLine"]["properties"]["input"])
    components["ExamplesAdd"]["properties"]["examples"]["maxItems"] = settings.max_examples_per_request
    input_strings(components["ExampleIn"]["properties"]["input"])
    demos = min(64, settings.max_demos)
    components["ControllerTrainRequest"]["properties"]["candidate_k"]["items"]["maximum"] = demos
    integer(components["TaskCreate"]["properties"]["default_k"])["maximum"] = demos


def _state_query_limits(paths: dict[str, Any], settings: Settings) -> None:
    """The batch route's query options: the same limits as its body's. Copies: the route's own parameters
    (openapi_extra) may be shared with other apps of the process."""
    operation = paths.get("/v1/tasks/{name}/batches", {}).get("post", {})
    parameters = copy.deepcopy(operation.get("parameters", []))
    for parameter in parameters:
        if parameter["name"] == "demos":
            next(option for option in parameter["schema"]["anyOf"] if option["type"] == "integer")[
                "maximum"] = settings.max_demos
    if operation:
        operation["parameters"] = parameters


def published_schema(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's OpenAPI document without the 422 answers it adds to every operation (validation errors are
    400 in the error envelope here, declared per operation), and with this server's request limits."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        for model in BATCH_BODIES:  # the batch route reads its body itself (JSON or JSON Lines)
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                schema["components"]["schemas"].setdefault(name, definition)
            schema["components"]["schemas"][model.__name__] = model_schema
        _state_limits(schema["components"]["schemas"], settings)
        _state_query_limits(schema["paths"], settings)
        app.openapi_schema = schema
    return app.openapi_schema
