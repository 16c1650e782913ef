"""Tasks over HTTP on the fake engine: create, list, get, delete; bad definitions store nothing."""

from __future__ import annotations

import pytest

from tests.service.support import EXAMPLES, TASK, assert_error, make_client, post_json


def test_task_lifecycle(client):
    created = client.post("/v1/tasks", json=TASK)
    assert created.status_code == 201
    body = created.json()
    assert body["verbalizers"] == {"negative": "negative", "positive": "positive"}
    assert body["n_examples"] == 0 and body["controller"] is None and body["default_k"] == 4
    assert body["separator"] == "\n\n"
    assert client.get("/v1/tasks").json()["tasks"][0]["name"] == "sent"
    assert client.get("/v1/tasks/sent").json()["template"] == TASK["template"]
    assert_error(client.post("/v1/tasks", json=TASK), 409, "name_taken", "name")
    assert client.delete("/v1/tasks/sent").status_code == 204
    assert_error(client.get("/v1/tasks/sent"), 404, "task_not_found")
    assert_error(client.delete("/v1/tasks/sent"), 404)


@pytest.mark.parametrize(
    "change, param",
    [
        ({"name": "Bad Name"}, "name"),
        ({"labels": ["only"]}, "labels"),
        ({"labels": ["a", "a"]}, "labels"),
        ({"verbalizers": {"other": "x"}}, "verbalizers"),
        ({"verbalizers": {"negative": "same", "positive": "same"}}, "verbalizers"),
        ({"template": "Input: {text}"}, "template"),
        ({"template": "Label: {label}"}, "template"),
        ({"template": 5}, "template"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"labels": ["a", "b\udc00"]}, "labels[1]"),
        ({"labels": ["a", "b" * 257]}, "labels[1]"),
        ({"default_k": 65}, "default_k"),
        ({"separator": "\x00"}, "separator"),
    ],
)
def test_bad_task_definitions_are_400_and_store_nothing(client, change, param):
    assert_error(post_json(client, "/v1/tasks", {**TASK, **change}), 400, param=param)
    assert client.get("/v1/tasks").json() == {"tasks": []}


def test_malformed_json_and_wrong_types_are_400(client):
    response = client.post("/v1/tasks", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json")
    assert_error(client.post("/v1/tasks", json=["a list"]), 400)


def test_state_survives_restart(tmp_path):
    with make_client(tmp_path) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
    with make_client(tmp_path) as c:
        assert c.get("/v1/tasks/sent").json()["n_examples"] == 5
        body = c.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"], "demos": 1,
                                                      "calibration": "none"}).json()
        assert body["predictions"][0]["demo_ids"] == ["p1"]
