"""The app as a whole: authentication, routing, dates."""

from __future__ import annotations

from tests.service.support import TASK, assert_error, make_client


def test_auth(tmp_path):
    with make_client(tmp_path, api_keys=["k1", "k2"]) as c:
        assert_error(c.get("/v1/tasks"), 401, "invalid_api_key")
        assert_error(c.get("/v1/tasks", headers={"Authorization": "Bearer nope"}), 401)
        assert c.get("/v1/tasks", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200


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
