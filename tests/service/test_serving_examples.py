"""Examples over HTTP on the fake engine: add, list, label; a bad batch stores nothing."""

from __future__ import annotations

import pytest

from tests.service.support import EXAMPLES, assert_error


def test_examples_added_listed_and_patched(client, task):
    listing = client.get("/v1/tasks/sent/examples").json()
    assert listing["total"] == 5 and listing["examples"][0] == {"id": "p1", "input": {"text": "great fun film"},
                                                                 "label": "positive"}
    assert client.get("/v1/tasks/sent/examples?labeled=false").json()["examples"][0]["id"] == "u1"
    assert client.get("/v1/tasks/sent/examples?labeled=true&limit=2&offset=3").json()["total"] == 4
    patched = client.patch("/v1/tasks/sent/examples/u1", json={"label": "negative"})
    assert patched.status_code == 200 and patched.json()["label"] == "negative"
    t = client.get("/v1/tasks/sent").json()
    assert (t["n_examples"], t["n_labeled"]) == (5, 5)
    assert_error(client.patch("/v1/tasks/sent/examples/nope", json={"label": "negative"}), 404, "example_not_found")
    assert_error(client.patch("/v1/tasks/sent/examples/u1", json={"label": "maybe"}), 400, "invalid_label")
    generated = client.post("/v1/tasks/sent/examples", json={"examples": [{"input": "x"}]})
    assert generated.json() == {"added": 1, "n_examples": 6, "n_labeled": 5}


@pytest.mark.parametrize(
    "examples, status, param",
    [
        ([{"input": "ok", "label": "positive"}, {"input": "bad", "label": "maybe"}], 400, "examples[1].label"),
        ([{"input": {"sentence": "x"}}], 400, "examples[0].input"),
        ([{"input": 7}], 400, None),
        ([{"id": "p1", "input": "dup of stored"}], 409, "examples[0].id"),
        ([{"id": "z", "input": "a"}, {"id": "z", "input": "b"}], 409, "examples[1].id"),
        ([{"input": "x" * 201}], 413, "examples[0].input"),
        ([], 400, "examples"),
        ([{"id": "a/b", "input": "x"}], 400, "examples[0].id"),
    ],
)
def test_bad_example_batches_store_nothing(client, task, examples, status, param):
    before = client.get("/v1/tasks/sent").json()
    assert_error(client.post("/v1/tasks/sent/examples", json={"examples": examples}), status, param=param)
    assert client.get("/v1/tasks/sent").json() == before
    assert client.get("/v1/tasks/sent/examples").json()["total"] == len(EXAMPLES)


def test_examples_for_unknown_task_is_404(client):
    assert_error(client.post("/v1/tasks/none/examples", json={"examples": EXAMPLES}), 404, "task_not_found")


def test_huge_offset_is_400(client, task):
    assert_error(client.get("/v1/tasks/sent/examples?offset=99999999999999999999"), 400, param="offset")
