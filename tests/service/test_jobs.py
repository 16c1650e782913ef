import asyncio

from service.jobs import JobRunner
from service.store import Store


async def _wait(store, job_id, status):
    for _ in range(200):
        job = store.get_job(job_id)
        if job.status == status:
            return job
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {status}: {store.get_job(job_id)}")


async def test_job_reports_progress_then_result(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    runner = JobRunner(store)
    gate = asyncio.Event()

    async def body(progress):
        progress(0.5)
        await gate.wait()
        return {"answer": 42}

    job = await runner.submit("demo", "task", body)
    assert job.status == "queued"
    running = await _wait(store, job.id, "running")
    for _ in range(100):
        if store.get_job(job.id).progress == 0.5:
            break
        await asyncio.sleep(0.01)
    assert store.get_job(job.id).progress == 0.5 and running.result is None
    gate.set()
    done = await _wait(store, job.id, "succeeded")
    assert done.result == {"answer": 42} and done.progress == 1.0


async def test_failed_job_says_why_and_restart_fails_unfinished(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    runner = JobRunner(store)

    async def broken(progress):
        raise ValueError("needs 20 labeled examples, has 3")

    job = await runner.submit("demo", None, broken)
    failed = await _wait(store, job.id, "failed")
    assert failed.error == {"message": "needs 20 labeled examples, has 3", "type": "ValueError"}

    stuck = store.create_job("demo", None)
    store.fail_unfinished_jobs("restarted")
    assert store.get_job(stuck.id).status == "failed"
