"""The app as a whole: authentication, the body limit, the published schema."""

from __future__ import annotations

import json

from tests.service.support import TASK, assert_error, make_client


def test_auth(tmp_path):
    with make_client(tmp_path, api_keys=["k1", "k2"]) as c:
        assert_error(c.get("/v1/tasks"), 401, "invalid_api_key")
        assert_error(c.get("/v1/tasks", headers={"Authorization": "Bearer nope"}), 401)
        assert c.get("/v1/tasks", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_body_too_large(tmp_path):
    with make_client(tmp_path, max_body_bytes=1000) as c:
        assert_error(c.post("/v1/tasks", json={**TASK, "instruction": "x" * 2000}), 413, "body_too_large")
        body = json.dumps({**TASK, "instruction": "x" * 2000}).encode()

        def chunks():  # no Content-Length: the limit is enforced while reading
            for i in range(0, len(body), 100):
                yield body[i:i + 100]

        chunked = c.post("/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
        assert_error(chunked, 413, "body_too_large")
        assert c.get("/v1/tasks").json() == {"tasks": []}
        assert 'status="413"' in c.get("/metrics").text


def test_openapi_describes_the_contract(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/v1/tasks", "/v1/tasks/{name}", "/v1/tasks/{name}/examples",
                 "/v1/tasks/{name}/examples/{example_id}", "/v1/tasks/{name}/predict",
                 "/v1/tasks/{name}/controller", "/v1/tasks/{name}/annotation-plan", "/v1/jobs/{job_id}",
                 "/v1/models", "/health", "/metrics"]:
        assert path in paths


def test_a_405_names_every_method_of_the_path(tmp_path):
    with make_client(tmp_path) as c:
        response = c.put("/v1/tasks")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, POST"
        assert c.request("OPTIONS", "/v1/tasks/sent").headers["allow"] == "DELETE, GET"


def test_dates_carry_their_time_zone(tmp_path):
    from datetime import datetime

    with make_client(tmp_path) as c:
        c.post("/v1/tasks", json=TASK)
        created = datetime.fromisoformat(c.get("/v1/tasks/sent").json()["created_at"])
        assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
