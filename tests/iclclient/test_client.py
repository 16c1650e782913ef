"""The typed client over the whole API, on the fake engine."""

from __future__ import annotations

import pytest

from iclclient import APIError, Client, ServiceUnreachable
from tests.service.support import EXAMPLES, TASK


def _examples(n):
    return [{"id": f"e{i}", "input": f"{'positive' if i % 2 else 'negative'} film {i}",
             "label": "positive" if i % 2 else "negative"} for i in range(n)]


def test_every_resource_round_trips(http):
    client = Client(api_key="secret", http=http)
    task = client.create_task(TASK["name"], TASK["labels"], TASK["template"], default_k=2)
    assert task["name"] == "sent" and task["default_k"] == 2 and task["controller"] is None
    assert [t["name"] for t in client.list_tasks()] == ["sent"]
    assert client.add_examples("sent", EXAMPLES)["n_labeled"] == 4
    assert client.list_examples("sent", labeled=False)["examples"][0]["id"] == "u1"
    assert client.label_example("sent", "u1", "negative")["label"] == "negative"
    answer = client.predict("sent", ["great fun positive", {"text": "boring"}], demos=1, calibration="none",
                            include_prompt=True)
    assert [p["k"] for p in answer["predictions"]] == [1, 1] and answer["predictions"][0]["prompt"]
    budget = client.predict("sent", ["great fun"], demos=4, max_prompt_tokens=12)
    assert budget["usage"]["prompt_tokens"] <= 12
    assert client.get_task("sent")["n_labeled"] == 5
    client.delete_task("sent")
    assert client.list_tasks() == []


def test_jobs_plans_and_operations(http):
    client = Client(api_key="secret", http=http)
    client.create_task("sent", TASK["labels"], TASK["template"])
    client.add_examples("sent", _examples(40) + [{"input": f"unlabeled {i}"} for i in range(6)])
    fit = client.get_task("sent")["fit"]  # 40 labeled examples: the service fits the task by itself
    assert fit["state"] == "running"
    assert client.wait_for_job(fit["job_id"], poll_s=0.01)["status"] == "succeeded"
    assert client.get_task("sent")["fit"]["state"] == "fitted"
    seen = []
    job = client.wait_for_job(client.train_controller("sent", [0, 1, 2], train_size=20), poll_s=0.01,
                              on_progress=seen.append)
    assert job["status"] == "succeeded" and seen[-1] == 1.0
    assert client.get_controller("sent")["candidate_k"] == [0, 1, 2, 4]  # with the task's default count
    plan = client.annotation_plan("sent", 3, "votek")
    assert len(plan["ids"]) == 3 and plan["method"] == "votek"
    two_stage = client.annotation_plan("sent", 2, "votek_two_stage", confidence_demos=2)  # a job, waited for
    assert len(two_stage["ids"]) == 2
    client.delete_controller("sent")
    assert client.health() and client.models()[0]["id"] == "fake-model"
    assert "icl_requests_total" in client.metrics()
    with pytest.raises(APIError) as refused:  # the API key does not open the admin endpoints
        client.reset_prefix_cache()
    assert refused.value.status == 401
    Client(api_key="secret", admin_key="admin-secret", http=http).reset_prefix_cache()


def test_batch_jobs(http):
    client = Client(api_key="secret", http=http)
    client.create_task("sent", TASK["labels"], TASK["template"])
    client.add_examples("sent", EXAMPLES)
    inputs = [f"{'positive' if i % 3 else 'negative'} film {i}" for i in range(7)]
    job_id = client.create_batch("sent", inputs, ids=[f"r{i}" for i in range(7)], demos=1, calibration="none")
    job = client.wait_for_job(job_id, poll_s=0.01)
    assert job["kind"] == "batch" and job["batch"] == {**job["batch"], "total": 7, "done": 7, "errors": 0}
    results = list(client.iter_batch_results(job_id, page=3))
    assert [r["id"] for r in results] == [f"r{i}" for i in range(7)]
    assert [r["prediction"]["label"] for r in results] == [
        p["label"] for p in client.predict("sent", inputs, demos=1, calibration="none")["predictions"]]
    with pytest.raises(APIError) as finished:
        client.cancel_job(job_id)
    assert finished.value.status == 409 and finished.value.code == "job_finished"
    client.delete_job(job_id)
    with pytest.raises(APIError) as gone:
        client.get_job(job_id)
    assert gone.value.status == 404 and gone.value.code == "job_not_found"


def test_errors_carry_the_envelope(http):
    client = Client(api_key="secret", http=http)
    with pytest.raises(APIError) as missing:
        client.get_task("nothing")
    assert (missing.value.status, missing.value.code, missing.value.param) == (404, "task_not_found", "name")
    client.create_task("sent", TASK["labels"], TASK["template"])
    with pytest.raises(APIError) as bad:
        client.predict("sent", [])
    assert bad.value.status == 400 and bad.value.param == "inputs"
    with pytest.raises(APIError) as unauthorised:
        Client(api_key="wrong", http=http).list_tasks()
    assert unauthorised.value.status == 401
    with pytest.raises(APIError):  # a key given to one client is not left on the shared connection
        Client(http=http).list_tasks()


def test_busy_answers_are_retried_after_the_time_they_ask(http, monkeypatch):
    client = Client(api_key="secret", http=http, retries=2)
    client.create_task("sent", TASK["labels"], TASK["template"])
    state = http.app.state.icl
    waits = []
    monkeypatch.setattr("iclclient.client.time.sleep", waits.append)
    state.inflight_prompts = state.settings.max_inflight_prompts  # as if the engine were full
    with pytest.raises(APIError) as busy:
        client.predict("sent", ["a"], demos=0)
    assert busy.value.status == 429 and waits == [2.0, 2.0]  # Retry-After: 2, twice, then the answer
    state.inflight_prompts = 0
    assert client.predict("sent", ["a"], demos=0)["predictions"]


def test_url_and_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("ICL_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("ICL_API_KEY", "k")
    client = Client()
    assert client.url == "http://127.0.0.1:9" and client._headers == {"Authorization": "Bearer k"}
    with pytest.raises(ServiceUnreachable, match="no service answers at http://127.0.0.1:9"):
        client.list_tasks()


def test_list_jobs_filters_and_pages_newest_first(http):
    client = Client(api_key="secret", http=http)
    client.create_task("sent", TASK["labels"], TASK["template"])
    client.create_task("other", TASK["labels"], TASK["template"])
    client.add_examples("sent", _examples(30))
    client.add_examples("other", EXAMPLES)
    fit = client.train_controller("sent", [0, 1], train_size=20)
    client.wait_for_job(fit, poll_s=0.01)
    first = client.create_batch("other", ["a film"], demos=0)
    client.wait_for_job(first, poll_s=0.01)
    second = client.create_batch("sent", ["another film"], demos=0, calibration="batch")
    client.wait_for_job(second, poll_s=0.01)
    every = client.list_jobs()
    assert every["total"] == 3 and [j["job_id"] for j in every["jobs"]] == [second, first, fit]
    assert all(j["created_at"] <= j["updated_at"] for j in every["jobs"])
    assert [j["job_id"] for j in client.list_jobs(kind="batch")["jobs"]] == [second, first]
    assert [j["job_id"] for j in client.list_jobs(task="sent")["jobs"]] == [second, fit]
    assert [j["job_id"] for j in client.list_jobs(task="sent", kind="controller")["jobs"]] == [fit]
    assert client.list_jobs(status="running") == {"jobs": [], "total": 0}
    page = client.list_jobs(limit=1, offset=1)
    assert page["total"] == 3 and [j["job_id"] for j in page["jobs"]] == [first]
    with pytest.raises(APIError) as refused:
        client.list_jobs(limit=101)
    assert refused.value.status == 400


def test_options_left_none_are_not_sent(http):
    sent = []
    http.event_hooks["request"].append(sent.append)
    Client(api_key="secret", http=http).list_jobs(kind="batch")
    assert dict(sent[-1].url.params) == {"kind": "batch", "limit": "20", "offset": "0"}
