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


def test_admin_endpoints_are_off_without_admin_keys_and_api_keys_do_not_open_them(tmp_path):
    from service.state import Runtime
    from tests.fakes import FakeEmbedder, FakeScorer

    def app(**keys):
        scorer = FakeScorer()
        settings = Settings(data_dir=tmp_path, auto_fit=False, **keys)
        return scorer, TestClient(create_app(settings, runtime=Runtime(scorer=scorer, embedder=FakeEmbedder())))

    _, off = app()
    with off as c:
        assert_error(c.post("/v1/admin/reset-prefix-cache"), 403, "admin_disabled")
    scorer, on = app(api_keys=["user-key"], admin_keys=["admin-key", "second-admin-key"])
    with on as c:
        user = {"Authorization": "Bearer user-key"}
        assert c.get("/v1/tasks", headers=user).status_code == 200
        assert_error(c.post("/v1/admin/reset-prefix-cache", headers=user), 401, "invalid_admin_key")
        assert_error(c.get("/v1/tasks", headers={"Authorization": "Bearer admin-key"}), 401, "invalid_api_key")
        for header in ("Bearer admin-ke", "Bearer admin-key2", "Basic admin-key", "admin-key", "Bearer ", "",
                       "Bearer admin-key admin-key", "bearer  second-admin-key  "):
            response = c.post("/v1/admin/reset-prefix-cache", headers={"Authorization": header})
            if header.strip().lower().startswith("bearer") and header.split()[-1] == "second-admin-key":
                assert response.status_code == 200, header
            else:
                assert_error(response, 401, "invalid_admin_key")
        assert scorer.resets == 1
        assert c.post("/v1/admin/reset-prefix-cache", headers={"Authorization": "Bearer admin-key"}).json() == {}
        assert scorer.resets == 2
