"""Batch jobs over HTTP on the fake engine: JSON and JSON Lines bodies, results in input order, a line's own
error, cancelling, resuming after a stop, and interactive predicts first."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.state import Runtime
from service.store import Store
from tests.fakes import FakeEmbedder, FakeScorer
from tests.service.support import EXAMPLES, TASK, assert_error, make_client

TEXTS = ["great fun", "boring film", "great great", "awful plot", "fun acting", "boring boring", "a film", "great"]


def wait_for(client: TestClient, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def all_results(client: TestClient, job_id: str, limit: int = 3) -> list[dict]:
    results, offset = [], 0
    while True:
        page = client.get(f"/v1/jobs/{job_id}/results", params={"offset": offset, "limit": limit}).json()
        if not page["results"]:
            return results
        results += page["results"]
        offset = page["results"][-1]["index"] + 1


def jsonl(lines: list) -> bytes:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


def test_json_batch_answers_what_predict_answers_in_input_order(client, task):
    options = {"demos": 2, "calibration": "none"}
    created = client.post(f"/v1/tasks/{task}/batches",
                          json={"inputs": TEXTS, "ids": [f"c{i}" for i in range(len(TEXTS))], **options})
    assert created.status_code == 202, created.text
    job = wait_for(client, created.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["kind"] == "batch" and job["task"] == task and job["progress"] == 1.0
    assert job["batch"]["total"] == job["batch"]["done"] == len(TEXTS) and job["batch"]["errors"] == 0
    assert job["batch"]["runs"][0]["pool_version"] >= 1 and job["batch"]["runs"][0]["from_index"] == 0

    results = all_results(client, job["job_id"])
    assert [r["index"] for r in results] == list(range(len(TEXTS)))
    assert [r["id"] for r in results] == [f"c{i}" for i in range(len(TEXTS))]
    direct = client.post(f"/v1/tasks/{task}/predict", json={"inputs": TEXTS, **options}).json()["predictions"]
    assert [r["prediction"] for r in results] == direct


def test_jsonl_batch_gives_a_bad_line_its_own_error_and_downloads_in_order(client, task):
    lines = [{"input": "positive fun", "id": "a"}, "{not json", {"input": {"wrong": "field"}, "id": "b"},
             {"input": "negative plot"}, {"text": "no input key"}, {"input": "x" * 500, "id": "long"}]
    created = client.post(f"/v1/tasks/{task}/batches?demos=1&calibration=none", content=jsonl(lines),
                          headers={"content-type": "application/x-ndjson"})
    assert created.status_code == 202, created.text
    job = wait_for(client, created.json()["job_id"])
    assert job["status"] == "succeeded"
    assert job["batch"] == {**job["batch"], "total": 6, "done": 6, "errors": 4}
    download = client.get(f"/v1/jobs/{job['job_id']}/results", params={"format": "jsonl"})
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in download.text.splitlines()]
    assert [r["index"] for r in rows] == list(range(6))
    assert [r["status"] for r in rows] == ["succeeded", "failed", "failed", "succeeded", "failed", "failed"]
    assert rows[0]["id"] == "a" and rows[0]["prediction"]["label"] == "positive"
    assert rows[1]["error"]["code"] == "invalid_line" and "line 2" in rows[1]["error"]["message"]
    assert rows[2]["error"]["code"] == "invalid_input" and rows[2]["id"] == "b"
    assert rows[3]["prediction"]["label"] == "negative" and rows[3]["prediction"]["k"] == 1
    assert rows[4]["error"]["code"] == "invalid_line"
    assert rows[5]["error"]["code"] == "input_too_large" and "inputs[5]" in rows[5]["error"]["message"]


def test_json_lines_end_at_newlines_only(client, task):
    """U+2028, U+0085 and form feeds may stand unescaped in JSON strings: they do not end a line."""
    lines = ["\ufeff" + json.dumps({"input": "positive\u2028fun", "id": "a"}, ensure_ascii=False),
             json.dumps({"input": "negative\x85plot\x0c", "id": "b"}, ensure_ascii=False) + "\r", ""]
    created = client.post(f"/v1/tasks/{task}/batches", content="\n".join(lines).encode(),
                          headers={"content-type": "application/x-ndjson"})
    job = wait_for(client, created.json()["job_id"])
    assert job["batch"] == {**job["batch"], "total": 2, "done": 2, "errors": 0}
    assert [r["id"] for r in all_results(client, job["job_id"])] == ["a", "b"]


def test_input_over_the_window_fails_alone(tmp_path):
    with make_client(tmp_path, max_input_chars=20_000) as client:
        client.post("/v1/tasks", json=TASK)
        client.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
        too_long = " ".join(["word"] * 600)  # the fake engine's window is 512 tokens
        created = client.post("/v1/tasks/sent/batches", json={"inputs": ["great", too_long, "boring"], "demos": 1})
        job = wait_for(client, created.json()["job_id"])
        results = all_results(client, job["job_id"])
        assert [r["status"] for r in results] == ["succeeded", "failed", "succeeded"]
        assert results[1]["error"]["code"] == "context_length_exceeded"
        assert "inputs[1]" in results[1]["error"]["message"]


def test_batch_body_limit_is_its_own(tmp_path):
    with make_client(tmp_path, max_body_bytes=2_000, max_batch_body_bytes=200_000) as client:
        client.post("/v1/tasks", json=TASK)
        client.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
        inputs = [f"great film number {i}" for i in range(150)]
        assert_error(client.post("/v1/tasks/sent/predict", json={"inputs": inputs[:8] * 12}), 413, "body_too_large")
        created = client.post("/v1/tasks/sent/batches", json={"inputs": inputs, "demos": 1})
        assert created.status_code == 202, created.text
        assert wait_for(client, created.json()["job_id"])["batch"]["done"] == 150
        too_big = client.post("/v1/tasks/sent/batches", json={"inputs": inputs * 80})
        assert_error(too_big, 413, "body_too_large")


def slow_client(tmp_path, tokens_per_s: float = 400.0, **overrides) -> TestClient:
    settings = Settings(data_dir=tmp_path, batch_chunk_inputs=2, **overrides)
    scorer = FakeScorer(tokens_per_s=tokens_per_s)
    return TestClient(create_app(settings, runtime=Runtime(scorer=scorer, embedder=FakeEmbedder())))


def test_cancel_stops_the_job_and_keeps_what_it_classified(tmp_path):
    with slow_client(tmp_path) as client:
        client.post("/v1/tasks", json=TASK)
        client.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
        job_id = client.post("/v1/tasks/sent/batches", json={"inputs": TEXTS * 8, "demos": 2}).json()["job_id"]
        wait_for(client, job_id, statuses=("running",))
        while client.get(f"/v1/jobs/{job_id}").json()["batch"]["done"] == 0:
            time.sleep(0.02)
        cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        while client.app.state.icl.jobs.running(job_id):  # what the engine was scoring may still be stored
            time.sleep(0.02)
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled" and 0 < job["batch"]["done"] < len(TEXTS) * 8
        time.sleep(0.3)
        assert client.get(f"/v1/jobs/{job_id}").json()["batch"]["done"] == job["batch"]["done"]
        statuses = {r["status"] for r in all_results(client, job_id, limit=100)}
        assert statuses == {"succeeded", "pending"}
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_cancel_refuses_finished_and_other_jobs(client, task):
    job_id = client.post(f"/v1/tasks/{task}/batches", json={"inputs": ["great"]}).json()["job_id"]
    wait_for(client, job_id)
    assert_error(client.post(f"/v1/jobs/{job_id}/cancel"), 409, "job_finished")
    fit = client.app.state.icl.store.create_job("controller", task)
    assert_error(client.post(f"/v1/jobs/{fit.id}/cancel"), 409, "not_a_batch_job")
    assert_error(client.get(f"/v1/jobs/{fit.id}/results"), 409, "not_a_batch_job")
    assert_error(client.post("/v1/jobs/job-missing/cancel"), 404, "job_not_found")
    assert_error(client.get("/v1/jobs/job-missing/results"), 404, "job_not_found")


def test_a_stopped_service_resumes_the_job_where_it_stopped(tmp_path):
    inputs = [f"{text} {i}" for i, text in enumerate(TEXTS * 6)]
    with slow_client(tmp_path) as client:
        client.post("/v1/tasks", json=TASK)
        client.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
        job_id = client.post("/v1/tasks/sent/batches", json={"inputs": inputs, "demos": 2}).json()["job_id"]
        while client.get(f"/v1/jobs/{job_id}").json()["batch"]["done"] < 4:
            time.sleep(0.02)
    # The service stopped mid-job: the job is unfinished and nobody's.
    store = Store(f"sqlite:///{tmp_path / 'iclserve.db'}")
    first = {item.position: item.outcome for item in store.batch_items(job_id, 0, 1000) if item.outcome}
    assert store.get_job(job_id).status == "queued" and 4 <= len(first) < len(inputs)
    assert store.batch_state(job_id) == ("queued", None)  # released for the next start
    store.close()

    with slow_client(tmp_path, tokens_per_s=100_000) as client:
        job = wait_for(client, job_id)
        assert job["status"] == "succeeded" and job["batch"]["done"] == len(inputs)
        runs = job["batch"]["runs"]
        assert len(runs) == 2 and runs[1]["from_index"] == min(set(range(len(inputs))) - set(first))
        results = all_results(client, job_id, limit=100)
        assert all(r["status"] == "succeeded" for r in results)
        for position, outcome in first.items():  # what the first run stored stays as it was
            assert results[position]["prediction"] == outcome["prediction"]
        direct = client.post("/v1/tasks/sent/predict", json={"inputs": inputs[:8], "demos": 2}).json()
        assert [r["prediction"]["label"] for r in results[:8]] == [p["label"] for p in direct["predictions"]]


def test_a_dead_runners_job_is_claimed_once(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    task = store.create_task("t", ["a", "b"], {"a": "a", "b": "b"}, "{text} {label}", None, "\n", None)
    job = store.create_batch("t", task.id, {}, "proc-dead", [(None, "x", None)])
    assert store.claim_batches("proc-me", timedelta(seconds=60)) == []  # its owner still beats
    assert store.claim_batches("proc-me", timedelta(seconds=-1)) == [job.id]  # nobody heard of it: stale
    assert store.claim_batches("proc-other", timedelta(seconds=60)) == []  # claimed, and beating again
    store.release_batches("proc-me")
    claims: list[list[str]] = []
    threads = [threading.Thread(target=lambda name=name: claims.append(store.claim_batches(name, timedelta(60))))
               for name in ("proc-one", "proc-two", "proc-three")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(len, claims)) == [0, 0, 1]  # released: claimed, by one process only
    store.fail_stale_jobs(timedelta(seconds=-1), "gone")
    assert store.get_job(job.id).status == "queued"  # batch jobs are resumed, never failed as stale


def test_predicts_come_first_and_never_get_429_because_of_a_batch(tmp_path):
    with slow_client(tmp_path, tokens_per_s=2_000, max_inflight_prompts=2, max_inputs=4,
                     batch_max_yield_s=1.5) as client:
        client.post("/v1/tasks", json=TASK)
        client.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
        state = client.app.state.icl
        scorer = state.runtime.scorer
        state.inflight_prompts = 1  # a predict in flight: the batch waits for it
        began = time.monotonic()
        job_id = client.post("/v1/tasks/sent/batches", json={"inputs": TEXTS * 4, "demos": 2}).json()["job_id"]
        time.sleep(0.3)
        assert scorer.priorities == [] and client.get(f"/v1/jobs/{job_id}").json()["batch"]["done"] == 0
        while not scorer.priorities:  # ... at most ICL_BATCH_MAX_YIELD_S: steady traffic does not stop it
            assert time.monotonic() - began < 10
            time.sleep(0.01)
        assert time.monotonic() - began >= 1.5
        state.inflight_prompts = 0
        answers = [client.post("/v1/tasks/sent/predict", json={"inputs": TEXTS[:2], "demos": 2})
                   for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        wait_for(client, job_id)
        assert set(scorer.priorities) == {0, 1}  # the batch's prompts at the lower priority


def test_deleting_the_task_ends_its_batch_job(tmp_path):
    with slow_client(tmp_path, tokens_per_s=300) as client:
        client.post("/v1/tasks", json=TASK)
        client.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
        job_id = client.post("/v1/tasks/sent/batches", json={"inputs": TEXTS * 40, "demos": 2}).json()["job_id"]
        wait_for(client, job_id, statuses=("running",))
        assert client.delete("/v1/tasks/sent").status_code == 204
        job = wait_for(client, job_id)
        assert job["status"] == "failed" and job["error"]["type"] == "task_deleted"
