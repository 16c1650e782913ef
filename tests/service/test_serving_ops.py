"""Health, models, metrics and the prefix-cache reset over HTTP on the fake engine."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.service.support import TASK, assert_error


def test_health_models_metrics_jobs(client, task):
    assert client.get("/health").json() == {}
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake-model"
    client.post("/v1/tasks/sent/predict", json={"inputs": ["great"], "demos": 1})
    text = client.get("/metrics").text
    assert 'icl_requests_total{method="POST",route="/v1/tasks/{name}/predict",status="200"} 1.0' in text
    assert "icl_prompt_tokens_total" in text and "icl_demos_per_input_bucket" in text
    assert "icl_engine_queue_depth" in text
    assert_error(client.get("/v1/jobs/job-missing"), 404, "job_not_found")
    assert client.post("/v1/admin/reset-prefix-cache").json() == {}
    assert client.app.state.icl.runtime.scorer.resets == 1
    assert_error(client.get("/v1/nothing-here"), 404)


def test_health_503_until_engine_ready(tmp_path):
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings, runtime=None, runtime_factory=None)) as c:
        assert_error(c.get("/health"), 503, "engine_not_ready")
        assert c.post("/v1/tasks", json=TASK).status_code == 201  # tasks need no engine
        assert_error(c.post("/v1/tasks/sent/predict", json={"inputs": ["a"]}), 503)



def test_an_engine_that_failed_to_start_says_so_without_retry_after(tmp_path):
    def broken(settings):
        raise RuntimeError("Insufficient space in /dev/shm")

    with TestClient(create_app(Settings(data_dir=tmp_path), runtime=None, runtime_factory=broken)) as c:
        for _ in range(200):
            if c.app.state.icl.startup_error:
                break
            time.sleep(0.01)
        response = c.get("/health")
        assert_error(response, 503, "engine_failed")
        assert "/dev/shm" in response.json()["error"]["message"] and "retry-after" not in response.headers
