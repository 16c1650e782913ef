"""A batch job's upload read and checked: a JSON body (inputs and options in one object) or a JSON Lines body
(one input a line, options in the query string). A malformed body, or option, is a 400 for the whole job; a
JSON Lines line that cannot be read, or an input the template cannot take, becomes that input's own error and
the other inputs are classified."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from controller.templates import PromptTemplate
from service.errors import (
    APIError,
    body_parse_error,
    empty_body,
    media_type,
    not_utf8,
    reads_as_json,
    unsupported_media_type,
)
from service.inputs import template_input
from service.protocol import MAX_BATCH_INPUTS, BatchLine, BatchRequest, PredictOptionsBody
from service.validation import SchemaView, not_accepted, validation_message

BaseModelT = TypeVar("BaseModelT", bound=BaseModel)

JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/x-jsonlines")
Items = list[tuple[str | None, Any, dict[str, Any] | None]]  # (client id, input, outcome known already)
QUERY_OPTIONS = ("demos", "selection", "calibration", "domain_calibration", "seed", "include_prompt",
                 "max_prompt_tokens")


def _item_error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "code": code}}


def failed_item(error: APIError, message: str | None = None) -> dict[str, Any]:
    """The stored outcome of an input that ``error`` is for alone (``message`` in place of the error's own)."""
    return _item_error(error.message if message is None else message, error.code)


@dataclass(frozen=True)
class BatchSchemas:
    """The published schemas a batch body is read against, for messages that say what each field accepts."""

    body: SchemaView
    line: SchemaView

    @classmethod
    def of(cls, components: Mapping[str, Any] | None = None) -> BatchSchemas:
        """From the published components (with this server's limits), or from the models themselves."""
        if components:
            return cls(SchemaView.of_component("BatchRequest", components),
                       SchemaView.of_component("BatchLine", components))
        return cls(SchemaView.of_model(BatchRequest), SchemaView.of_model(BatchLine))


def parse_upload(body: bytes, content_type: str, query: Mapping[str, str],
                 schemas: BatchSchemas | None = None) -> tuple[PredictOptionsBody, Items]:
    """The upload's options and inputs, read as its Content-Type says; 415 for any other type."""
    if media_type(content_type) in JSONL_TYPES:
        return parse_jsonl_body(body, query, schemas)
    if reads_as_json(content_type):
        return parse_json_body(body, query, schemas)
    raise unsupported_media_type(content_type, "JSON (application/json) or JSON Lines (application/x-ndjson)")


def _validated(model: type[BaseModelT], raw: object, view: SchemaView) -> BaseModelT:
    """``raw`` as ``model``, or 400 in the envelope saying what is wrong, as for any other body."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        message, param = validation_message(exc.errors(), view)
        raise APIError(400, message, "invalid_value", param) from exc


def _too_many_inputs(count: int) -> APIError:
    return APIError(413, f"{count} inputs in one batch; at most {MAX_BATCH_INPUTS} are allowed", "too_many_inputs",
                    "inputs")


def _json(body: bytes, schemas: BatchSchemas) -> object:
    """The body as JSON, or the 400 that says why it is not, as for every other JSON body."""
    if not body:
        raise empty_body(schemas.body)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise body_parse_error(exc) from exc


def parse_json_body(body: bytes, query: Mapping[str, str],
                    schemas: BatchSchemas | None = None) -> tuple[PredictOptionsBody, Items]:
    """A JSON body: inputs and options in one object (options may come in the query string instead); a
    malformed body or field is a 400 for the whole job."""
    schemas = schemas or BatchSchemas.of()
    raw = _json(body, schemas)
    from_query = _query_options(query, schemas.body)
    if isinstance(raw, dict):
        both = sorted(set(raw) & set(from_query))
        if both:
            raise APIError(400, f"'{both[0]}' is given both in the body and in the query string; give it once",
                           "conflicting_options", both[0])
        raw = {**from_query, **raw}
    if isinstance(raw, dict) and isinstance(raw.get("inputs"), list) and len(raw["inputs"]) > MAX_BATCH_INPUTS:
        raise _too_many_inputs(len(raw["inputs"]))
    request = _validated(BatchRequest, raw, schemas.body)
    ids = request.ids or [None] * len(request.inputs)
    options = _validated(PredictOptionsBody, request.model_dump(exclude={"inputs", "ids"}, exclude_unset=True),
                         schemas.body)
    return options, [(client_id, value, None) for client_id, value in zip(ids, request.inputs, strict=True)]


def parse_jsonl_body(body: bytes, query: Mapping[str, str],
                     schemas: BatchSchemas | None = None) -> tuple[PredictOptionsBody, Items]:
    """A JSON Lines body: one ``{"input": ..., "id": ...}`` per line, options in the query string. A line that
    cannot be read becomes that input's error; the others are classified."""
    schemas = schemas or BatchSchemas.of()
    options = _validated(PredictOptionsBody, _query_options(query, schemas.body), schemas.body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(exc) from exc
    # JSON Lines ends a line at "\n" alone: str.splitlines would also split at U+2028 and other characters that
    # JSON strings may hold unescaped. A trailing "\r" is white space to json.loads.
    lines = [line for line in text.removeprefix("\ufeff").split("\n") if line.strip()]
    if not lines:
        raise APIError(400, "the request body has no input lines: send one JSON object a line, each "
                       f"{schemas.line.describe(schemas.line.root)}", "invalid_value", "body")
    if len(lines) > MAX_BATCH_INPUTS:
        raise _too_many_inputs(len(lines))
    items: Items = []
    for number, line in enumerate(lines):
        try:
            parsed = BatchLine.model_validate(json.loads(line))
        except (ValueError, RecursionError) as exc:
            message = (validation_message(exc.errors(), schemas.line, f"line {number + 1}: ", root="line")[0]
                       if isinstance(exc, ValidationError) else f"line {number + 1} is not valid JSON")
            items.append((None, None, _item_error(message, "invalid_line")))
            continue
        items.append((parsed.id, parsed.input, None))
    return options, items


def _query_options(query: Mapping[str, str], view: SchemaView) -> dict[str, Any]:
    """Predict options given as query parameters, as the body would carry them (``view``: the body's schema,
    which names what each option accepts)."""
    unknown = sorted(set(query) - set(QUERY_OPTIONS))
    if unknown:
        raise APIError(400, f"unknown query parameter '{unknown[0]}'; a batch takes {', '.join(QUERY_OPTIONS)}",
                       "invalid_value", unknown[0])
    raw: dict[str, Any] = {}
    for name, value in query.items():
        path = ("budget", "max_prompt_tokens") if name == "max_prompt_tokens" else (name,)
        if name in ("seed", "max_prompt_tokens") or (name == "demos" and value != "auto"):
            try:
                number = int(value)
            except ValueError as exc:
                raise APIError(400, not_accepted(view, path, value, name), "invalid_value", name) from exc
            if name == "max_prompt_tokens":
                raw["budget"] = {"max_prompt_tokens": number}
            else:
                raw[name] = number
        elif name == "include_prompt":
            if value.lower() not in ("true", "false", "1", "0"):
                raise APIError(400, not_accepted(view, path, value, name), "invalid_value", name)
            raw[name] = value.lower() in ("true", "1")
        else:
            raw[name] = value
    return raw


def checked_items(items: Items, template: PromptTemplate, max_chars: int) -> Items:
    """Inputs the template cannot take, or over the size limit, get their error now."""
    out = []
    for position, (client_id, value, outcome) in enumerate(items):
        if outcome is None:
            try:
                template_input(value, template, max_chars, f"inputs[{position}]")
            except APIError as exc:
                outcome = failed_item(exc)
        out.append((client_id, value, outcome))
    return out
