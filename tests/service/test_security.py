"""Security basics: no key or input text in the logs or /metrics, a fuzzed Authorization header never gets
past 401, and deeply nested or oversized JSON is refused before any work."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.server_process import ServerProcess
from tests.service.support import TASK, make_client

KEY = "sk-live-3c1f0e9a7b"
ADMIN_KEY = "adm-9d2e4b6f1a"
SECRET = "patient-record-7741-confidential"


def test_keys_and_inputs_reach_neither_the_log_nor_the_metrics(tmp_path):
    server = ServerProcess(tmp_path, ICL_API_KEYS=KEY, ICL_ADMIN_KEYS=ADMIN_KEY, ICL_LOG_LEVEL="debug")
    server.start()
    try:
        auth = {"Authorization": f"Bearer {KEY}"}
        with server.client() as c:
            c.post("/v1/tasks", json=TASK, headers=auth)
            c.post("/v1/tasks/sent/examples", headers=auth, json={"examples": [
                {"id": "a", "input": f"{SECRET} positive", "label": "positive"},
                {"id": "b", "input": f"{SECRET} negative", "label": "negative"}]})
            assert c.post("/v1/tasks/sent/predict", json={"inputs": [SECRET]}, headers=auth).status_code == 200
            bad = c.post("/v1/tasks/sent/predict", json={"inputs": [{"nope": SECRET}]}, headers=auth)
            assert bad.status_code == 400
            assert c.get("/v1/tasks", headers={"Authorization": f"Bearer {KEY}x"}).status_code == 401
            assert c.post("/v1/admin/reset-prefix-cache",
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200
            metrics = c.get("/metrics").text
        time.sleep(0.3)  # let the log flush
        log = server.log()
        assert "POST /v1/tasks/sent/predict" in log  # the access log is there, at debug level
        for secret in (KEY, ADMIN_KEY, SECRET):
            assert secret not in log, f"{secret} in the log"
            assert secret not in metrics, f"{secret} in /metrics"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    with make_client(tmp_path_factory.mktemp("auth"), api_keys=[KEY]) as c:
        yield c


@given(header=st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")),
                        st.text().map(lambda t: f"Bearer {t}"), st.sampled_from([
                            f"Bearer {KEY} ", f"bearer {KEY}x", f"Bearer {KEY[:-1]}", f"Basic {KEY}", KEY,
                            f"Bearer  {KEY[1:]}", f"Bearer {KEY}\x00", f"Bearer {KEY.upper()}"])))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_fuzzed_authorization_header_never_gets_past_401(guarded, header):
    try:
        header.encode("latin-1")
    except UnicodeEncodeError:
        return  # not sendable as an HTTP header
    if header.strip() in (f"Bearer {KEY}", f"bearer {KEY}") or "\n" in header or "\r" in header:
        return
    response = guarded.get("/v1/tasks", headers={"Authorization": header.encode("latin-1")})
    assert response.status_code == 401, (header, response.status_code)
    assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("depth", [100, 10_000, 1_000_000])
def test_deeply_nested_json_is_refused_before_any_work(tmp_path, depth):
    with make_client(tmp_path) as c:
        c.post("/v1/tasks", json=TASK)
        body = '{"inputs": [' + "[" * depth + "]" * depth + "]}"
        began = time.perf_counter()
        response = c.post("/v1/tasks/sent/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] in ("invalid_json", "invalid_value")
        assert "nested too deeply" in response.json()["error"]["message"] or depth < 1000
        assert time.perf_counter() - began < 5
        assert c.get("/v1/tasks/sent").json()["n_examples"] == 0
