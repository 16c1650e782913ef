"""No path sends the engine an empty prompt, which vLLM refuses (and so does the fake engine): an empty input
under a template with no text around it is the client's 400 naming it, and where the empty text is the
service's own (content-free calibration, the fit's held-back examples) it is left out."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fakes import FakeScorer
from tests.service.support import assert_error, make_client, post_json

BARE = {"name": "bare", "labels": ["negative", "positive"], "template": "{text}{label}"}
SPACED = {**BARE, "name": "spaced", "template": "{text} {label}"}


def _labeled(n: int, empty_every: int = 0) -> list[dict]:
    out = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        text = "" if empty_every and i % empty_every == 0 else f"{label} film number {i}"
        out.append({"id": f"e{i}", "input": text, "label": label})
    return out


def _wait(client, job_id: str) -> dict:
    for _ in range(1000):
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path, auto_fit=False) as c:
        for task in (BARE, SPACED):
            assert c.post("/v1/tasks", json=task).status_code == 201
            assert c.post(f"/v1/tasks/{task['name']}/examples", json={"examples": _labeled(8)}).status_code == 200
        yield c


def test_the_fake_engine_refuses_an_empty_prompt_as_vllm_does():
    with pytest.raises(ValueError, match="prompt cannot be empty"):
        asyncio.run(FakeScorer().score([[1], []], ["a"]))


@pytest.mark.parametrize("task", ["bare", "spaced"])
def test_an_empty_input_without_demonstrations_is_400_naming_it(client, task):
    response = post_json(client, f"/v1/tasks/{task}/predict", {"inputs": ["great", ""], "demos": 0})
    assert_error(response, 400, "empty_prompt", "inputs[1]")
    message = response.json()["error"]["message"]
    assert "empty prompt" in message and "demonstrations" in message and "retry" not in message
    for body in ({"inputs": [""], "demos": 1}, {"inputs": ["great"], "demos": 0}):
        assert post_json(client, f"/v1/tasks/{task}/predict", body).status_code == 200, body


def test_demos_auto_with_a_default_count_of_zero_says_the_same(client):
    assert client.post("/v1/tasks", json={**BARE, "name": "zero", "default_k": 0}).status_code == 201
    client.post("/v1/tasks/zero/examples", json={"examples": _labeled(4)})
    assert_error(post_json(client, "/v1/tasks/zero/predict", {"inputs": [""]}), 400, "empty_prompt", "inputs[0]")


def test_an_instruction_makes_a_prompt_of_an_empty_input(client):
    assert client.post("/v1/tasks", json={**BARE, "name": "told", "instruction": "Classify."}).status_code == 201
    assert post_json(client, "/v1/tasks/told/predict", {"inputs": [""], "demos": 0}).status_code == 200


@pytest.mark.parametrize("calibration", ["contextual", "domain", "auto", "batch"])
@pytest.mark.parametrize("selection", ["knn", "random"])
def test_calibration_sends_no_empty_prompt_without_demonstrations(client, calibration, selection):
    body = {"inputs": ["great film", "awful"], "demos": 0, "calibration": calibration, "selection": selection}
    response = post_json(client, "/v1/tasks/bare/predict", body)
    assert response.status_code == 200, response.text
    if calibration == "contextual":  # "N/A" and "[MASK]" still estimate the bias
        assert {p["calibration"] for p in response.json()["predictions"]} == {"contextual"}


def test_a_budget_keeps_a_demonstration_for_an_empty_input(client):
    body = {"inputs": ["", "great fun film"], "demos": 2}
    free = post_json(client, "/v1/tasks/bare/predict", body).json()["usage"]["prompt_tokens"]
    for budget in range(1, free + 1):
        response = post_json(client, "/v1/tasks/bare/predict", {**body, "budget": {"max_prompt_tokens": budget}})
        if response.status_code != 200:
            assert_error(response, 400, "budget_too_small", "budget.max_prompt_tokens")
            continue
        assert response.json()["predictions"][0]["k"] >= 1


def test_a_batch_item_with_an_empty_prompt_gets_its_own_error(client):
    response = post_json(client, "/v1/tasks/bare/batches", {"inputs": ["great", "", "awful"], "demos": 0})
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    results = client.get(f"/v1/jobs/{job['job_id']}/results").json()["results"]
    assert [r["status"] for r in results] == ["succeeded", "failed", "succeeded"]
    assert results[1]["error"]["code"] == "empty_prompt"
    assert results[1]["error"]["message"].startswith("inputs[1] makes an empty prompt")


@pytest.mark.parametrize("selection", ["knn", "random"])
def test_a_fit_never_holds_back_an_example_without_a_prompt_at_zero(tmp_path, selection):
    with make_client(tmp_path, auto_fit=False) as c:
        c.post("/v1/tasks", json=BARE)
        assert c.post("/v1/tasks/bare/examples", json={"examples": _labeled(48, empty_every=4)}).status_code == 200
        response = post_json(c, "/v1/tasks/bare/controller", {"candidate_k": [0, 1, 2], "train_size": 24,
                                                                "selection": selection})
        assert response.status_code == 202, response.text
        job = _wait(c, response.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["result"]["validation"]["n_train"] + job["result"]["validation"]["n_validation"] == 24


def test_a_fit_that_cannot_hold_back_enough_examples_says_why(tmp_path):
    with make_client(tmp_path, auto_fit=False) as c:
        c.post("/v1/tasks", json=BARE)
        c.post("/v1/tasks/bare/examples", json={"examples": _labeled(24, empty_every=2)})
        job = _wait(c, post_json(c, "/v1/tasks/bare/controller", {"candidate_k": [0, 2]}).json()["job_id"])
        assert job["status"] == "failed" and "empty input" in job["error"]["message"], job


def test_two_stage_votek_over_empty_unlabeled_inputs(client):
    client.post("/v1/tasks/bare/examples", json={"examples": [{"id": f"u{i}", "input": "" if i % 3 else f"film {i}"}
                                                              for i in range(12)]})
    response = post_json(client, "/v1/tasks/bare/annotation-plan", {"budget": 4, "method": "votek_two_stage"})
    assert response.status_code == 202, response.text
    job = _wait(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
