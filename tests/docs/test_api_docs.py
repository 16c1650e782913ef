"""docs/api.md and /openapi.json describe the same API: the same operations, each with the same request
body, query parameters, answers and error statuses, and the same objects with the same fields (and which of
them are required)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.service.support import make_client

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
OPERATION = re.compile(r"^### `(GET|POST|PATCH|DELETE|PUT) (\S+)`$")
OBJECT = re.compile(r"^#### `(\w+)`$")
FIELD_ROW = re.compile(r"^\| `(\w+)` \| [^|]+ \| (yes|no) \|")


def _names(text: str) -> list[str]:
    return re.findall(r"`(\w+)`", text)


def parse(doc: str) -> tuple[dict[tuple[str, str], dict], dict[str, dict[str, bool]]]:
    operations: dict[tuple[str, str], dict] = {}
    objects: dict[str, dict[str, bool]] = {}
    operation: dict | None = None
    fields: dict[str, bool] | None = None
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
            fields[match[1]] = match[2] == "yes"
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
        assert {f for f, is_required in fields.items() if is_required} == required, name


def test_the_parser_sees_what_the_page_says(documented):
    """A page the parser misread would agree with anything: check it read the predict operation whole."""
    operations, objects = documented
    predict = operations[("post", "/v1/tasks/{name}/predict")]
    assert predict == {"body": "PredictRequest", "query": [], "answers": {"200": "PredictResponse"},
                       "errors": ["400", "401", "404", "413", "429", "503"]}
    assert objects["PredictRequest"]["inputs"] is True and objects["PredictRequest"]["demos"] is False
    assert len(objects["PredictionObject"]) == 7
