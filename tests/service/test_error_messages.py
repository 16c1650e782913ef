"""Every error names the field and what it accepts, in the published schema's words (this server's limits
included), as one message per problem; bodies that are empty, not UTF-8 or of another type are told apart."""

from __future__ import annotations

import json

import pytest

from tests.service.support import EXAMPLES, TASK, assert_error, make_client, post_json

PREDICT = "/v1/tasks/sent/predict"
BATCHES = "/v1/tasks/sent/batches"
DEMOS = 'demos is "auto" or an integer from 0 to 10'
INPUT = "a string of at most 200 characters or an object of strings (each of at most 200 characters)"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("messages"), max_demos=10) as c:
        assert c.post("/v1/tasks", json=TASK).status_code == 201
        assert c.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES}).status_code == 200
        yield c


def message(response, status=400, code="invalid_value", param=None) -> str:
    assert_error(response, status, code, param)
    return response.json()["error"]["message"]


@pytest.mark.parametrize(("field", "value", "param", "expected"), [
    ("demos", "4", "demos", f'demos: "4" is not accepted: {DEMOS}'),
    ("demos", -1, "demos", f"demos: -1 is not accepted: {DEMOS}"),
    ("demos", 2.5, "demos", f"demos: 2.5 is not accepted: {DEMOS}"),
    ("selection", "KNN", "selection",
     'selection: "KNN" is not accepted: selection is one of "knn", "random" or "diverse"'),
    ("calibration", "x", "calibration", 'calibration: "x" is not accepted: calibration is one of "auto", "batch", '
                                        '"domain", "contextual" or "none"'),
    ("domain_calibration", "fast", "domain_calibration",
     'domain_calibration: "fast" is not accepted: domain_calibration is "default", "reference" or an object with '
     "the fields samples, shared_set_samples, pooling, max_sets, calibrate_knn"),
    ("domain_calibration", {"samples": 0}, "domain_calibration.samples",
     "domain_calibration.samples: 0 is not accepted: domain_calibration.samples is an integer from 1 to 64"),
    ("budget", {"max_prompt_tokens": 0}, "budget.max_prompt_tokens",
     "budget.max_prompt_tokens: 0 is not accepted: budget.max_prompt_tokens is an integer of at least 1 or null"),
    ("budget", 5, "budget",
     "budget: 5 is not accepted: budget is an object with the field max_prompt_tokens or null"),
    ("include_prompt", "maybe", "include_prompt",
     'include_prompt: "maybe" is not accepted: include_prompt is true or false'),
    ("colour", "red", "colour", "colour: unknown field; the body's fields are inputs, demos, selection, budget, "
                                "calibration, domain_calibration, include_prompt, seed, decision"),
])
def test_a_field_s_error_says_what_it_accepts(client, field, value, param, expected):
    assert message(post_json(client, PREDICT, {"inputs": ["x"], field: value}), param=param) == expected


@pytest.mark.parametrize(("inputs", "param", "expected"), [
    (5, "inputs", f"inputs: 5 is not accepted: inputs is a list of 1 to 8 items, each {INPUT}"),
    (["x", 5], "inputs[1]", f"inputs[1]: 5 is not accepted: inputs[1] is {INPUT}"),
    ([["x"]], "inputs[0]", f'inputs[0]: ["x"] is not accepted: inputs[0] is {INPUT}'),
    ([{"text": 5}], "inputs[0].text",
     "inputs[0].text: 5 is not accepted: inputs[0].text is a string of at most 200 characters"),
    # What a validator says of a value of the right type is kept: it names the rule.
    (["a\x00b"], "inputs[0]", "inputs[0]: text must not contain NUL characters"),
    ([], "inputs", f"inputs: [] is not accepted: inputs is a list of 1 to 8 items, each {INPUT}"),
])
def test_an_input_is_a_string_or_an_object_of_strings(client, inputs, param, expected):
    assert message(post_json(client, PREDICT, {"inputs": inputs}), param=param) == expected


def test_a_missing_field_and_more_problems_are_counted(client):
    assert message(post_json(client, PREDICT, {}), param="inputs") == (
        f"inputs: required, and not given: inputs is a list of 1 to 8 items, each {INPUT}")
    text = message(post_json(client, PREDICT, {"inputs": 5, "demos": "x", "seed": -1}), param="demos")
    assert text.endswith("(and 2 more problem(s))"), text


def test_the_limit_of_demos_is_this_server_s(client):
    assert message(post_json(client, PREDICT, {"inputs": ["x"], "demos": 11}), param="demos") == (
        f"demos: 11 is not accepted: {DEMOS}")


def test_a_body_that_is_not_an_object_is_named_body(client):
    assert message(post_json(client, PREDICT, [1, 2]), param="body") == (
        "body: [1, 2] is not accepted: the body is a JSON object with the fields inputs (required), demos, "
        "selection, budget, calibration, domain_calibration, include_prompt, seed, decision")
    assert "the body is a JSON object" in message(post_json(client, PREDICT, None), param="body")


def test_a_value_is_quoted_in_ascii_whatever_it_holds(client):
    response = post_json(client, PREDICT, {"inputs": ["x"], "selection": "\udc00é" + "z" * 100})
    text = message(response, param="selection")
    # A lone surrogate could not be written as UTF-8: the value is shown escaped, and cut short.
    assert text.startswith('selection: "\\udc00\\u00e9zzz') and "\udc00" not in text
    assert len(text.split(" is not accepted")[0]) < 80


@pytest.mark.parametrize(("url", "expected"), [
    ("/v1/jobs?limit=0", 'limit: "0" is not accepted: limit is an integer from 1 to 100'),
    ("/v1/jobs?kind=fit", 'kind: "fit" is not accepted: kind is one of "controller", "annotation" or "batch"'),
    ("/v1/tasks/sent/examples?labeled=maybe", 'labeled: "maybe" is not accepted: labeled is true or false'),
])
def test_a_query_parameter_s_error_says_what_it_accepts(client, url, expected):
    param = url.split("?")[1].split("=")[0]
    assert message(client.get(url), param=param) == expected


def _body_routes(client) -> list[tuple[str, str, bool]]:
    """Every operation whose JSON body FastAPI reads: (method, path with names filled in, body required)."""
    out = []
    for route in client.app.routes:
        field = getattr(route, "body_field", None)
        if field is not None:
            path = route.path_format.replace("{name}", "sent").replace("{example_id}", "p1")
            out.extend((method, path, field.field_info.is_required()) for method in route.methods)
    return out


def test_every_json_route_says_an_empty_body_is_empty_and_what_it_must_be(client):
    routes = _body_routes(client)
    assert len(routes) == 6
    for method, path, required in routes:
        response = client.request(method, path, content=b"", headers={"content-type": "application/json"})
        if not required:  # the fit's body may be left out
            assert response.status_code != 400 or response.json()["error"]["param"] != "body", response.text
            continue
        text = message(response, param="body")
        assert text.startswith("the request body is empty: send a JSON object with the field"), (path, text)
        assert "(required)" in text, (path, text)
    assert message(client.post(PREDICT, content=b"", headers={"content-type": "application/json"}), param="body") == (
        "the request body is empty: send a JSON object with the fields inputs (required), demos, selection, "
        "budget, calibration, domain_calibration, include_prompt, seed, decision")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/xml"])
def test_every_json_route_answers_415_to_another_content_type_and_declares_it(client, content_type):
    published = client.get("/openapi.json").json()
    body = json.dumps({"inputs": ["x"]}).encode()
    for method, path, _required in _body_routes(client):
        response = client.request(method, path, content=body, headers={"content-type": content_type})
        text = message(response, 415, "unsupported_media_type")
        assert f"'{content_type}' is not accepted" in text and "application/json" in text, text
        template = next(r.path_format for r in client.app.routes if getattr(r, "body_field", None) is not None
                        and path == r.path_format.replace("{name}", "sent").replace("{example_id}", "p1"))
        assert "415" in published["paths"][template][method.lower()]["responses"], (method, template)


def test_a_body_without_content_type_is_415_and_another_json_type_is_read(client):
    """A browser sends a body without a Content-Type across origins without asking first: never read it."""
    body = json.dumps({"inputs": ["great film"]}).encode()
    for method, path, _required in [*_body_routes(client), ("POST", BATCHES, True)]:
        response = client.request(method, path, content=body)
        assert "content-type" not in response.request.headers
        text = message(response, 415, "unsupported_media_type")
        assert text.startswith("the body has no Content-Type; this operation reads") and "application/json" in text
    assert client.post(PREDICT, content=b'{"inputs": ["x"]}',
                       headers={"content-type": "application/vnd.api+json"}).status_code == 200


def test_a_body_that_is_not_utf8_is_told_from_one_nested_too_deeply(client):
    latin1 = '{"inputs": ["café"]}'.encode("latin-1")
    for url, content_type in ((PREDICT, "application/json"), (BATCHES, "application/json"),
                              (BATCHES, "application/x-ndjson")):
        text = message(client.post(url, content=latin1, headers={"content-type": content_type}), code="invalid_json",
                       param="body")
        assert text.startswith("request body is not UTF-8"), (url, text)
    deep = '{"inputs": [' + "[" * 100_000 + "]" * 100_000 + "]}"
    for url in (PREDICT, BATCHES):
        text = message(client.post(url, content=deep, headers={"content-type": "application/json"}),
                       code="invalid_json", param="body")
        assert "nested too deeply" in text and "UTF-8" not in text, text


def test_lists_nested_hundreds_deep_are_400_on_every_body_route(client):
    """JSON the parser takes (it gives up some thousand levels deep) but nested deeper than any field: a 400
    naming the field, never a 500 from a recursion on the way."""
    for depth in (600, 990):
        nested = "[" * depth + "]" * depth
        for method, path, _required in [*_body_routes(client), ("POST", BATCHES, True)]:
            for field in ("inputs", "examples", "candidate_k", "label"):
                response = client.request(method, path, content=f'{{"{field}": {nested}}}',
                                          headers={"content-type": "application/json"})
                assert response.status_code == 400, (depth, path, field, response.text[:200])


def test_invalid_json_says_where(client):
    text = message(client.post(PREDICT, content=b'{"inputs": [}', headers={"content-type": "application/json"}),
                   code="invalid_json", param="body")
    assert text.startswith("request body is not valid JSON: ") and "at character" in text, text


@pytest.mark.parametrize(("body", "query", "content_type", "param", "expected"), [
    ({"inputs": ["x"], "demos": "4"}, "", "application/json", "demos", f'demos: "4" is not accepted: {DEMOS}'),
    ({"inputs": ["x"]}, "?demos=-1", "application/json", "demos", f"demos: -1 is not accepted: {DEMOS}"),
    ({"inputs": ["x"]}, "?demos=four", "application/json", "demos", f'demos: "four" is not accepted: {DEMOS}'),
    ({"inputs": ["x"]}, "?include_prompt=yes", "application/json", "include_prompt",
     'include_prompt: "yes" is not accepted: include_prompt is true or false'),
    ({"inputs": ["x"], "ids": ["a", 5]}, "", "application/json", "ids[1]",
     "ids[1]: 5 is not accepted: ids[1] is a string of at most 256 characters or null"),
    ('{"input": "x"}\n', "?selection=KNN", "application/x-ndjson", "selection",
     'selection: "KNN" is not accepted: selection is one of "knn", "random" or "diverse"'),
])
def test_a_batch_s_errors_say_the_same(client, body, query, content_type, param, expected):
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    response = client.post(BATCHES + query, content=content, headers={"content-type": content_type})
    assert message(response, param=param) == expected


def test_a_batch_body_that_is_empty_or_of_another_type(client):
    text = message(client.post(BATCHES, content=b"", headers={"content-type": "application/json"}), param="body")
    assert text.startswith("the request body is empty: send a JSON object with the fields inputs (required)"), text
    text = message(client.post(BATCHES, content=b"\n\n", headers={"content-type": "application/x-ndjson"}),
                   param="body")
    assert text == ("the request body has no input lines: send one JSON object a line, each an object with the "
                    "fields input (required), id")
    text = message(client.post(BATCHES, content=b"x", headers={"content-type": "text/plain"}), 415,
                   "unsupported_media_type")
    assert "application/json" in text and "application/x-ndjson" in text


def test_a_batch_line_s_error_says_what_a_line_is(client):
    lines = b'{"input": "great"}\n5\n{"input": 5}\n{"input": "x", "extra": 1}\n'
    response = client.post(BATCHES + "?demos=0", content=lines, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    results = client.get(f"/v1/jobs/{job_id}/results").json()["results"]
    errors = [r["error"]["message"] if r["error"] else None for r in results]
    assert errors[1] == "line 2: 5 is not accepted: line 2 is a JSON object with the fields input (required), id"
    assert errors[2] == ("line 3: input: 5 is not accepted: input is a string of at most 200 characters or an "
                         "object of strings (each of at most 200 characters)")
    assert errors[3] == "line 4: extra: unknown field; the line's fields are input, id"


def test_a_fit_s_counts_are_distinct(client):
    response = post_json(client, "/v1/tasks/sent/controller", {"candidate_k": [0, 0]})
    assert message(response, param="candidate_k") == (
        "candidate_k: a count is given more than once; give each count once (at least two distinct counts)")
    published = client.get("/openapi.json").json()["components"]["schemas"]["ControllerTrainRequest"]
    assert published["properties"]["candidate_k"]["uniqueItems"] is True
