"""kill -9 of the service at bad moments, on SQLite and (when ICL_TEST_POSTGRES_URL is set) PostgreSQL:
after a restart nothing is half-written, a killed job says so, and the store is intact."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time

import httpx
import pytest

from service.store import Store
from tests.service.server_process import ServerProcess
from tests.service.support import TASK, empty_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    if request.param == "sqlite":
        return None  # the service's default: a SQLite file in its data directory
    return empty_postgres()


@pytest.fixture
def server(tmp_path, database_url):
    process = ServerProcess(tmp_path, database_url)
    yield process
    process.stop()


def _batch(prefix: str, n: int, labeled: bool = True) -> dict:
    return {"examples": [{"id": f"{prefix}-{i}", "input": f"{'positive' if i % 2 else 'negative'} film {i}",
                          **({"label": "positive" if i % 2 else "negative"} if labeled else {})}
                         for i in range(n)]}


def _ids(client: httpx.Client) -> set[str]:
    ids: set[str] = set()
    while True:
        page = client.get("/v1/tasks/sent/examples", params={"limit": 1000, "offset": len(ids)}).json()
        ids |= {e["id"] for e in page["examples"]}
        if len(ids) >= page["total"] or not page["examples"]:
            return ids


def test_an_upload_killed_inside_its_commit_is_not_there_at_all(server):
    server.start()
    with server.client() as c:
        assert c.post("/v1/tasks", json=TASK).status_code == 201
        assert c.post("/v1/tasks/sent/examples", json=_batch("before", 100)).status_code == 200
    server.kill()
    server.start(ICL_FAILPOINT="upload-commit")  # dies with the batch's 5,000 rows written, not committed
    with server.client() as c, pytest.raises(httpx.HTTPError):
        c.post("/v1/tasks/sent/examples", json=_batch("batch", 5000))
    assert server.wait() != 0
    server.start()
    with server.client() as c:
        assert c.get("/v1/tasks/sent").json()["n_examples"] == 100
        assert _ids(c) == {f"before-{i}" for i in range(100)}
        # The ids of the lost batch are free: sent again, it is taken whole.
        assert c.post("/v1/tasks/sent/examples", json=_batch("batch", 5000)).json()["n_examples"] == 5100


def test_uploads_killed_at_spread_moments_are_all_there_or_not_at_all(server):
    server.start()
    with server.client() as c:
        c.post("/v1/tasks", json=TASK)
        began = time.perf_counter()
        c.post("/v1/tasks/sent/examples", json=_batch("timing", 5000))
        took = time.perf_counter() - began
    outcomes = []
    for trial, fraction in enumerate((0.2, 0.5, 0.8, 1.1)):
        with server.client() as c:
            before = c.get("/v1/tasks/sent").json()["n_examples"]
            batch = _batch(f"trial{trial}", 5000)
            sender = threading.Thread(target=lambda c=c, batch=batch: _post_quietly(c, batch))
            sender.start()
            time.sleep(took * fraction)
            server.kill()
            sender.join()
        server.start()
        with server.client() as c:
            added = c.get("/v1/tasks/sent").json()["n_examples"] - before
            assert added in (0, 5000), f"trial {trial}: {added} of 5000 examples stored"
            # Its first and last example are both there, or neither (the batch's ids are its own).
            found = {c.patch(f"/v1/tasks/sent/examples/trial{trial}-{i}", json={"label": "positive"}).status_code
                     for i in (0, 4999)}
            assert found == ({200} if added else {404}), found
            outcomes.append(bool(added))
    print(f"uploads taken whole: {sum(outcomes)} of {len(outcomes)} (upload {took:.2f} s)")


def _post_quietly(client: httpx.Client, body: dict) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the kill cuts it off, or not
        client.post("/v1/tasks/sent/examples", json=body)


def test_a_fit_killed_midway_is_failed_with_its_reason_and_the_previous_fit_still_serves(server):
    server.start()
    with server.client() as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json=_batch("first", 60))
        first = c.post("/v1/tasks/sent/controller", json={}).json()["job_id"]
        assert _wait_job(c, first)["status"] == "succeeded"
        fitted = c.get("/v1/tasks/sent/controller").json()
    server.kill()
    server.start(ICL_FAKE_TOKENS_PER_S="2000")  # an engine slow enough that the next fit is still running
    with server.client() as c:
        c.post("/v1/tasks/sent/examples", json=_batch("more", 60))
        second = c.post("/v1/tasks/sent/controller", json={}).json()["job_id"]
        time.sleep(0.5)
        assert c.get(f"/v1/jobs/{second}").json()["status"] == "running"
    server.kill()
    server.start()
    with server.client() as c:
        job = _wait_job(c, second)
        assert job["status"] == "failed" and "stopped" in job["error"]["message"], job
        assert c.get("/v1/tasks/sent/controller").json() == fitted
        assert c.get("/v1/tasks/sent").json()["fit"]["state"] == "fitted"
        answer = c.post("/v1/tasks/sent/predict", json={"inputs": ["a positive film"]})
        assert answer.status_code == 200 and answer.json()["predictions"][0]["k"] in fitted["candidate_k"]
        # And a new fit may start: the killed one holds nothing.
        assert c.post("/v1/tasks/sent/controller", json={}).status_code == 202


def test_a_batch_job_killed_midway_is_resumed_where_it_stopped(server, database_url):
    server.start(ICL_FAKE_TOKENS_PER_S="1500", ICL_BATCH_CHUNK_INPUTS="4")
    inputs = [f"{'positive' if i % 3 else 'negative'} film number {i}" for i in range(120)]
    with server.client() as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json=_batch("pool", 30))
        job_id = c.post("/v1/tasks/sent/batches", json={"inputs": inputs, "demos": 2}).json()["job_id"]
        deadline = time.monotonic() + 30
        while c.get(f"/v1/jobs/{job_id}").json()["batch"]["done"] < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
    server.kill()
    store = Store(database_url or f"sqlite:///{server.data_dir / 'iclserve.db'}")
    before = store.batch_items(job_id, 0, 1000)
    store.close()
    done_before = {item.position: item.outcome["prediction"] for item in before if item.outcome}
    assert 12 <= len(done_before) < len(inputs)
    server.start()
    with server.client() as c:
        job = _wait_job(c, job_id)  # resumed once its dead runner's heartbeat is stale
        assert job["status"] == "succeeded", job
        first_pending = min(item.position for item in before if not item.outcome)  # chunks end in any order
        assert len(job["batch"]["runs"]) == 2 and job["batch"]["runs"][1]["from_index"] == first_pending
        after = c.get(f"/v1/jobs/{job_id}/results", params={"limit": 1000}).json()["results"]
        assert [r["status"] for r in after] == ["succeeded"] * len(inputs)
        assert all(after[i]["prediction"] == prediction for i, prediction in done_before.items())
        direct = c.post("/v1/tasks/sent/predict", json={"inputs": inputs[-4:], "demos": 2}).json()["predictions"]
        assert [r["prediction"] for r in after[-4:]] == direct


def _wait_job(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {job}")


def test_a_store_killed_under_concurrent_writes_is_intact(server, database_url):
    server.start()
    with server.client() as c:
        c.post("/v1/tasks", json=TASK)
    acknowledged: list[str] = []
    sent: list[dict] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        with server.client(timeout=10) as c:
            for batch_no in range(10_000):
                if stop.is_set():
                    return
                batch = _batch(f"w{worker}-{batch_no}", 20, labeled=batch_no % 2 == 0)
                sent.append(batch)
                try:
                    if c.post("/v1/tasks/sent/examples", json=batch).status_code == 200:
                        acknowledged.append(f"w{worker}-{batch_no}")
                    c.patch(f"/v1/tasks/sent/examples/w{worker}-{batch_no}-0", json={"label": "positive"})
                except httpx.HTTPError:
                    return

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in writers:
        thread.start()
    time.sleep(2.0)
    server.kill()
    stop.set()
    for thread in writers:
        thread.join()
    assert acknowledged, "no write went through before the kill"
    if database_url is None:
        with sqlite3.connect(server.data_dir / "iclserve.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    server.start()
    with server.client() as c:
        stored = _ids(c)
        for batch in sent:
            ids = {e["id"] for e in batch["examples"]}
            assert ids <= stored or not ids & stored, "a batch was half-written"
        assert {f"{prefix}-0" for prefix in acknowledged} <= stored, "an acknowledged batch was lost"
        assert c.get("/v1/tasks/sent").json()["n_examples"] == len(stored)
