"""Every value a client sends is of the type the schema states: for each field of each request body, read from
the service's own /openapi.json, values of every other JSON type (a boolean as 1, a number as "0.5", a string
as 5, ...) are refused with a 400 that names the field, and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.service.support import EXAMPLES, TASK, assert_error, make_client, post_json

# Values by their own JSON type, among them what a lax parser would coerce: 1 to true, "0.5" to 0.5, 5 to "5".
VALUES = {"boolean": [True], "integer": [1, 3], "number": [0.5, 2.5], "string": ["true", "0.5", "3"],
          "array": [["x"]], "object": [{"a": 1}], "null": [None]}
# Each request body, with the fields of a valid one (which succeeds as it is).
BODIES = [
    ("post", "/v1/tasks", {"name": "other", "labels": ["a", "b"], "template": "{text}{label}"}),
    ("post", "/v1/tasks/sent/examples", {"examples": [{"id": "x1", "input": "new film", "label": "positive"}]}),
    ("post", "/v1/tasks/sent/predict", {"inputs": ["a film"], "include_prompt": False, "seed": 1,
                                        "budget": {"max_prompt_tokens": 400},
                                        "domain_calibration": {"pooling": 0.5, "calibrate_knn": True}}),
    ("post", "/v1/tasks/sent/batches", {"inputs": ["a film"], "include_prompt": False}),
    ("post", "/v1/tasks/sent/controller", {"candidate_k": [0, 1], "train_size": 20, "seed": 0}),
    ("post", "/v1/tasks/sent/annotation-plan", {"budget": 1, "seed": 0}),
    ("patch", "/v1/tasks/sent/examples/u1", {"label": "positive"}),  # last: it labels the one unlabeled example
]


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _options(schema: dict[str, Any], document: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(schema, document)
    if "anyOf" in schema or "oneOf" in schema:
        return [o for part in schema.get("anyOf", schema.get("oneOf")) for o in _options(part, document)]
    return [schema]


def _accepted_types(schema: dict[str, Any], document: dict[str, Any]) -> set[str]:
    types = set()
    for option in _options(schema, document):
        kind = option.get("type") or ("object" if "properties" in option else None)
        if kind is None:
            return set(VALUES)  # untyped: anything goes
        types |= {kind} if isinstance(kind, str) else set(kind)
    if "number" in types:
        types.add("integer")
    return types


def _body_schema(document: dict[str, Any], method: str, url: str) -> dict[str, Any]:
    template = {"/v1/tasks/sent/examples/u1": "/v1/tasks/{name}/examples/{example_id}"}.get(
        url, url.replace("/sent/", "/{name}/"))
    content = document["paths"][template][method]["requestBody"]["content"]["application/json"]
    return _resolve(content["schema"], document)


def _cases(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], str, Any]]:
    """(method, url, body, field path, wrong value): every scalar field of every body, one level of nested
    objects included, with each value of a type it does not accept."""
    out = []
    for method, url, body in BODIES:
        schema = _body_schema(document, method, url)
        for name, prop in schema.get("properties", {}).items():
            accepted = _accepted_types(prop, document)
            for kind, values in VALUES.items():
                if kind not in accepted:
                    out += [(method, url, {**body, name: value}, name, value) for value in values]
            nested = [o for o in _options(prop, document) if "properties" in o]
            if nested and isinstance(body.get(name), dict):
                for inner, inner_prop in nested[0]["properties"].items():
                    inner_accepted = _accepted_types(inner_prop, document)
                    for kind, values in VALUES.items():
                        if kind not in inner_accepted:
                            out += [(method, url, {**body, name: {**body[name], inner: value}}, f"{name}.{inner}",
                                     value) for value in values]
    return out


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("strict")) as c:
        assert c.post("/v1/tasks", json=TASK).status_code == 201
        assert c.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES}).status_code in (200, 201)
        yield c


def _stored(client) -> tuple[Any, ...]:
    tasks = client.get("/v1/tasks").json()
    examples = client.get("/v1/tasks/sent/examples", params={"limit": 1000}).json()
    jobs = client.get("/v1/jobs").json()
    return tasks, examples, len(jobs.get("jobs", jobs))


def test_each_valid_body_is_accepted_as_it_is(tmp_path):
    labeled = [{"input": f"{word} film {i}", "label": label} for i in range(15)
               for word, label in (("great", "positive"), ("awful", "negative"))]
    with make_client(tmp_path) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES + labeled})
        for method, url, body in BODIES:
            response = c.request(method.upper(), url, json=body)
            assert response.status_code < 300, (url, response.text)


def test_a_value_of_another_type_is_refused_naming_its_field_and_stores_nothing(client):
    document = client.get("/openapi.json").json()
    cases = _cases(document)
    fields = {(url, field) for _, url, _, field, _ in cases}
    # The lax coercions this guards against, among the cases.
    assert ("/v1/tasks/sent/predict", "include_prompt") in fields
    assert ("/v1/tasks/sent/predict", "domain_calibration.pooling") in fields
    assert len(fields) >= 20, sorted(fields)
    before = _stored(client)
    for method, url, body, field, value in cases:
        response = post_json(client, url, body) if method == "post" else client.patch(url, json=body)
        assert response.status_code == 400, (url, field, value, response.text)
        assert_error(response, 400)
        assert field.split(".")[-1] in response.json()["error"]["message"], (url, field, value, response.text)
    assert _stored(client) == before
