"""A batch upload read and checked: JSON and JSON Lines bodies, options in the query string, a line's own
error, and the 4xx of a malformed upload (nothing stored)."""

from __future__ import annotations

import json

import pytest

from controller.templates import PromptTemplate
from service.batch_uploads import checked_items, parse_json_body, parse_jsonl_body, parse_upload
from service.errors import APIError
from tests.service.support import EXAMPLES, assert_error

TEMPLATE = PromptTemplate.parse("Input: {text}\nLabel: {label}")


def test_json_lines_end_at_newlines_only():
    """U+2028, U+0085 and form feeds may stand unescaped in JSON strings: they do not end a line."""
    lines = ["\ufeff" + json.dumps({"input": "positive\u2028fun", "id": "a"}, ensure_ascii=False),
             json.dumps({"input": "negative\x85plot\x0c", "id": "b"}, ensure_ascii=False) + "\r", ""]
    _, items = parse_jsonl_body("\n".join(lines).encode(), {})
    assert items == [("a", "positive\u2028fun", None), ("b", "negative\x85plot\x0c", None)]


def test_a_line_that_cannot_be_read_is_that_input_s_error():
    body = b'{"input": "fine"}\n{not json\n{"text": "no input key"}'
    _, items = parse_jsonl_body(body, {})
    assert items[0] == (None, "fine", None)
    assert [outcome["error"]["code"] for _, _, outcome in items[1:]] == ["invalid_line", "invalid_line"]
    assert "line 2" in items[1][2]["error"]["message"] and "line 3" in items[2][2]["error"]["message"]


def test_query_options_read_as_the_body_would_carry_them():
    query = {"demos": "2", "seed": "7", "include_prompt": "1", "max_prompt_tokens": "300", "calibration": "none"}
    options, items = parse_json_body(b'{"inputs": ["a", "b"], "ids": ["x", "y"]}', query)
    assert (options.demos, options.seed, options.include_prompt, options.calibration) == (2, 7, True, "none")
    assert options.to_options().max_prompt_tokens == 300
    assert items == [("x", "a", None), ("y", "b", None)]
    assert parse_jsonl_body(b'{"input": "a"}', {"demos": "auto"})[0].demos == "auto"
    with pytest.raises(APIError) as info:
        parse_jsonl_body(b'{"input": "a"}', {"include_prompt": "maybe"})
    assert (info.value.status, info.value.param) == (400, "include_prompt")


def test_the_content_type_chooses_the_reader():
    assert parse_upload(b'{"input": "a"}', "application/x-ndjson", {})[1] == [(None, "a", None)]
    assert parse_upload(b'{"inputs": ["a"]}', "application/json; charset=utf-8", {})[1] == [(None, "a", None)]
    with pytest.raises(APIError) as info:
        parse_upload(b"a,b", "text/csv", {})
    assert (info.value.status, info.value.code) == (415, "unsupported_media_type")


def test_inputs_the_template_cannot_take_get_their_error_at_upload():
    items = [(None, "fine", None), ("b", {"wrong": "field"}, None), (None, "x" * 50, None),
             (None, None, {"error": {"message": "line 4 is not valid JSON", "code": "invalid_line"}})]
    checked = checked_items(items, TEMPLATE, max_chars=20)
    assert checked[0] == (None, "fine", None)
    assert checked[1][2]["error"]["code"] == "invalid_input" and checked[1][0] == "b"
    assert checked[2][2]["error"]["code"] == "input_too_large" and "inputs[2]" in checked[2][2]["error"]["message"]
    assert checked[3] == items[3]


def test_more_than_100000_inputs_are_413(client, task):
    response = client.post(f"/v1/tasks/{task}/batches", json={"inputs": ["a"] * 100_001})
    assert_error(response, 413, "too_many_inputs", "inputs")
    lines = b"\n".join([b'{"input": "a"}'] * 100_001)
    response = client.post(f"/v1/tasks/{task}/batches", content=lines, headers={"content-type": "application/x-ndjson"})
    assert_error(response, 413, "too_many_inputs", "inputs")


@pytest.mark.parametrize("body, headers, status, code", [
    ({"inputs": []}, None, 400, "invalid_value"),
    ({"inputs": ["a"], "demos": -1}, None, 400, "invalid_value"),
    ({"inputs": ["a", "b"], "ids": ["x"]}, None, 400, "invalid_value"),
    ({"inputs": ["a"], "calibration": "nope"}, None, 400, "invalid_value"),
    ({"inputs": ["a"], "demos": 65}, None, 400, "invalid_value"),
    (b"{broken", None, 400, "invalid_json"),
    (b"a,b", {"content-type": "text/csv"}, 415, "unsupported_media_type"),
    (b"", {"content-type": "application/x-ndjson"}, 400, "invalid_value"),
])
def test_bad_batch_requests_are_4xx_and_store_nothing(client, task, body, headers, status, code):
    if isinstance(body, dict):
        response = client.post(f"/v1/tasks/{task}/batches", json=body)
    else:
        response = client.post(f"/v1/tasks/{task}/batches", content=body,
                               headers=headers or {"content-type": "application/json"})
    assert_error(response, status, code)
    assert client.app.state.icl.store.list_tasks()[0].n_examples == len(EXAMPLES)
    with client.app.state.icl.store._sessions() as session:
        from sqlalchemy import func, select

        from service.store import BatchItemRow, JobRow
        assert session.scalar(select(func.count()).select_from(JobRow).where(JobRow.kind == "batch")) == 0
        assert session.scalar(select(func.count()).select_from(BatchItemRow)) == 0


def test_options_in_query_and_body_conflict(client, task):
    response = client.post(f"/v1/tasks/{task}/batches?demos=2", json={"inputs": ["a"], "demos": 1})
    assert_error(response, 400, "conflicting_options", "demos")
    assert_error(client.post(f"/v1/tasks/{task}/batches?bogus=1", json={"inputs": ["a"]}), 400, "invalid_value")
    assert_error(client.post("/v1/tasks/nope/batches", json={"inputs": ["a"]}), 404, "task_not_found")
