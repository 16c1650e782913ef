"""Two replicas, each its own process (on the fake engine), on one PostgreSQL database (ICL_TEST_POSTGRES_URL;
CI starts one): concurrent uploads lose nothing and take no id twice, a fit runs once, and both serve the same
pool after an upload."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from service.store import JobRow, Store
from tests.service.server_process import ServerProcess
from tests.service.support import POSTGRES_URL, TASK, empty_postgres

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="ICL_TEST_POSTGRES_URL is not set "
                                "(scripts/postgres-for-tests.sh starts a server)")


@pytest.fixture
def replicas(tmp_path):
    empty_postgres()
    servers = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            servers.append(ServerProcess(tmp_path / name, POSTGRES_URL).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


def _batch(prefix: str, n: int) -> dict:
    return {"examples": [{"id": f"{prefix}-{i}", "input": f"film {prefix} {i}",
                          "label": "positive" if i % 2 else "negative"} for i in range(n)]}


def _together(calls: list) -> list[httpx.Response]:
    """Run the calls at the same moment, one thread each; their responses in order."""
    barrier = threading.Barrier(len(calls))
    out: list[httpx.Response | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out  # type: ignore[return-value]


def test_two_replicas_on_one_database(replicas):
    a, b = (server.client() for server in replicas)
    try:
        assert a.post("/v1/tasks", json=TASK).status_code == 201
        assert b.post("/v1/tasks", json=TASK).json()["error"]["code"] == "name_taken"
        url = "/v1/tasks/sent/examples"
        # Distinct batches from both at once: every one taken.
        calls = [lambda c=c, i=i: c.post(url, json=_batch(f"own{i}", 25)) for i, c in enumerate([a, b] * 8)]
        assert [r.status_code for r in _together(calls)] == [200] * 16
        # The same batch to both at once, ten times: each taken once, the other answer 409 duplicate_id.
        contested = Counter()
        for round_ in range(10):
            body = _batch(f"both{round_}", 25)
            answers = _together([lambda c=c, body=body: c.post(url, json=body) for c in (a, b)])
            contested[tuple(sorted(r.status_code for r in answers))] += 1
        assert contested == {(200, 409): 10}, contested
        ids = set()
        for client in (a, b):
            page = client.get(url, params={"limit": 1000}).json()
            assert page["total"] == len(page["examples"]) == 16 * 25 + 10 * 25
            ids.add(frozenset(e["id"] for e in page["examples"]))
        assert len(ids) == 1 and len(next(iter(ids))) == 650  # the same pool, no id twice

        # A fit asked of both at once runs once.
        answers = _together([lambda c=c: c.post("/v1/tasks/sent/controller", json={}) for c in (a, b)])
        assert sorted(r.status_code for r in answers) == [202, 409], [r.text for r in answers]
        job = next(r.json()["job_id"] for r in answers if r.status_code == 202)
        store = Store(POSTGRES_URL)
        with store.engine.connect() as db:
            assert db.execute(select(func.count()).select_from(JobRow)
                              .where(JobRow.kind == "controller", JobRow.task_name == "sent")).scalar() == 1
        store.close()
        for _ in range(300):
            if a.get(f"/v1/jobs/{job}").json()["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        assert b.get(f"/v1/jobs/{job}").json()["status"] == "succeeded"
        assert a.get("/v1/tasks/sent/controller").json() == b.get("/v1/tasks/sent/controller").json()

        # An upload to one is served by the other at once: the new example is the nearest neighbour.
        before = b.post("/v1/tasks/sent/predict", json={"inputs": ["brand new words here"], "demos": 1}).json()
        assert a.post(url, json={"examples": [{"id": "fresh", "input": "brand new words here",
                                               "label": "positive"}]}).status_code == 200
        after = b.post("/v1/tasks/sent/predict", json={"inputs": ["brand new words here"], "demos": 1}).json()
        assert before["predictions"][0]["demo_ids"] != ["fresh"]
        assert after["predictions"][0]["demo_ids"] == ["fresh"]
        assert a.get("/v1/tasks/sent").json()["n_examples"] == b.get("/v1/tasks/sent").json()["n_examples"] == 651
    finally:
        a.close()
        b.close()
