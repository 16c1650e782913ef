"""The body limit: 413 in the error envelope, announced by Content-Length or found while reading; batch
uploads have a limit of their own."""

from __future__ import annotations

import json

from service.body_limit import BodyLimitMiddleware
from tests.service.support import TASK, assert_error, make_client


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


def test_only_batch_uploads_get_the_batch_limit():
    limits = BodyLimitMiddleware(app=None, max_bytes=10, batch_max_bytes=1_000)  # type: ignore[arg-type]
    assert limits._limit({"method": "POST", "path": "/v1/tasks/sent/batches"}) == 1_000
    assert limits._limit({"method": "POST", "path": "/v1/tasks/sent/batches/"}) == 1_000
    assert limits._limit({"method": "POST", "path": "/v1/tasks/sent/predict"}) == 10
    assert limits._limit({"method": "GET", "path": "/v1/tasks/sent/batches"}) == 10
    assert BodyLimitMiddleware(app=None, max_bytes=10)._limit(  # type: ignore[arg-type]
        {"method": "POST", "path": "/v1/tasks/sent/batches"}) == 10
