"""docs/api.md and /openapi.json describe the same API: the same operations, each with the same request
body, query parameters, answers and error statuses, and the same objects with the same fields (and which of
them are required)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.service.support import make_client

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
OPERATION = re.compile(r"^### `(GET|POST|PATCH|DELETE|PUT) (\S+)`$")
OBJECT = re.compile(r"^#### `(\w+)`$")
FIELD_ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \| (yes|no) \| (.*) \|$")


def _names(text: str) -> list[str]:
    return re.findall(r"`(\w+)`", text)


def parse(doc: str) -> tuple[dict[tuple[str, str], dict], dict[str, dict[str, dict]]]:
    """Operations by (method, path) and objects by name, each field with its type text, whether it is
    required, and its meaning text."""
    operations: dict[tuple[str, str], dict] = {}
    objects: dict[str, dict[str, dict]] = {}
    operation: dict | None = None
    fields: dict[str, dict] | None = None
    for line in doc.splitlines():
        if match := OPERATION.match(line):
            operation = operations.setdefault((match[1].lower(), match[2]),
                                              {"body": None, "query": [], "answers": {}, "errors": []})
            fields = None
        elif match := OBJECT.match(line):
            fields = objects.setdefault(match[1], {})
            operation = None
        elif line.startswith("### ") or line.startswith("## "):
            operation, fields = None, None
        elif operation is not None and line.startswith("- Request body: "):
            operation["body"] = _names(line)[0]
        elif operation is not None and line.startswith("- Query: "):
            operation["query"] = _names(line)
        elif operation is not None and line.startswith("- Answers: "):
            for part in line.removeprefix("- Answers: ").split(","):
                status, *schema = part.split()
                operation["answers"][status] = _names(" ".join(schema))[0] if schema else None
        elif operation is not None and line.startswith("- Errors: "):
            operation["errors"] = sorted(line.removeprefix("- Errors: ").replace(" ", "").split(","))
        elif fields is not None and (match := FIELD_ROW.match(line)):
            fields[match[1]] = {"type": match[2], "required": match[3] == "yes", "meaning": match[4]}
    return operations, objects


def _ref(schema: dict | None) -> str | None:
    """The object a schema names: its $ref, or the $ref among anyOf's alternatives."""
    if not schema:
        return None
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    refs = [_ref(option) for option in schema.get("anyOf", [])]
    refs = [r for r in refs if r]
    return refs[0] if refs else None


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("docs")) as client:
        return client.get("/openapi.json").json()


@pytest.fixture(scope="module")
def documented():
    return parse(DOC.read_text(encoding="utf-8"))


def test_the_same_operations(published, documented):
    operations, _ = documented
    found = {(method, path) for path, ops in published["paths"].items() for method in ops}
    assert set(operations) == found


def test_each_operation_takes_and_answers_what_it_says(published, documented):
    operations, _ = documented
    for (method, path), doc in operations.items():
        op = published["paths"][path][method]
        where = f"{method.upper()} {path}"
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        assert doc["body"] == _ref(body), where
        query = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
        assert doc["query"] == query, where
        answers = {status: _ref(answer.get("content", {}).get("application/json", {}).get("schema"))
                   for status, answer in op["responses"].items() if status.startswith("2")}
        assert doc["answers"] == answers, where
        errors = sorted(status for status in op["responses"] if not status.startswith("2"))
        assert doc["errors"] == errors, where
        for status in errors:  # every error answer is the envelope
            assert _ref(op["responses"][status]["content"]["application/json"]["schema"]) == "ErrorResponse"


def test_the_same_objects_with_the_same_fields(published, documented):
    _, objects = documented
    schemas = published["components"]["schemas"]
    assert set(objects) == set(schemas)
    for name, fields in objects.items():
        schema = schemas[name]
        assert list(fields) == list(schema["properties"]), name
        required = set(schema.get("required", []))
        assert {f for f, row in fields.items() if row["required"]} == required, name


def _options(prop: dict) -> list[dict]:
    return [prop, *prop.get("anyOf", [])]


def _number_forms(value: float) -> set[str]:
    if float(value).is_integer():
        return {str(int(value)), f"{int(value):,}"}
    return {str(value)}


def test_choices_defaults_and_bounds_as_documented(published, documented):
    """The values a field may take (its enum), its default and its numeric bounds, as its row states them."""
    _, objects = documented
    schemas = published["components"]["schemas"]
    for name, fields in objects.items():
        for field, row in fields.items():
            prop, where = schemas[name]["properties"][field], f"{name}.{field}"
            choices = {str(v) for option in _options(prop) for v in [*option.get("enum", []),
                                                                     *([option["const"]] if "const" in option else [])]}
            assert set(re.findall(r'"([^"]+)"', row["type"])) == choices, where
            text = f"{row['type']} {row['meaning']}"
            if prop.get("default") is not None:
                default = prop["default"]
                forms = _number_forms(default) if isinstance(default, int | float) and not isinstance(
                    default, bool) else {json.dumps(default)}
                assert any(form in text for form in forms), f"{where}: default {default!r} not stated"
            for option in _options(prop):
                for bound in ("minimum", "maximum"):
                    if bound in option and abs(option[bound]) < 1e9:
                        numbers = {n.rstrip(",.") for n in re.findall(r"\d[\d,.]*", text)}
                        assert _number_forms(option[bound]) & numbers, \
                            f"{where}: {bound} {option[bound]} not stated"


def test_the_parser_sees_what_the_page_says(documented):
    """A page the parser misread would agree with anything: check it read the predict operation whole."""
    operations, objects = documented
    predict = operations[("post", "/v1/tasks/{name}/predict")]
    assert predict == {"body": "PredictRequest", "query": [], "answers": {"200": "PredictResponse"},
                       "errors": ["400", "401", "404", "409", "413", "415", "429", "503"]}
    assert objects["PredictRequest"]["inputs"]["required"] and not objects["PredictRequest"]["demos"]["required"]
    assert len(objects["PredictionObject"]) == 12
