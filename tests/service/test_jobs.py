import asyncio
from datetime import timedelta

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
    assert store.fail_stale_jobs(timedelta(hours=1), "died") == 0  # heard of just now
    assert store.get_job(stuck.id).status == "queued"
    assert store.fail_stale_jobs(timedelta(0), "died") == 1
    assert store.get_job(stuck.id).error == {"message": "died", "type": "job_interrupted"}


async def test_replicas_keep_each_others_jobs_alive_and_fail_orphans(tmp_path):
    """Two runners on one database: each one's heartbeat keeps its own job running while the other sweeps;
    a job nobody runs (its process died) is failed once it has not been heard of for stale_after_s."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    replicas = [JobRunner(store, heartbeat_s=0.05, stale_after_s=0.3) for _ in range(2)]
    for runner in replicas:
        runner.start()
    gate = asyncio.Event()

    async def slow(progress):
        await gate.wait()
        return {}

    job = await replicas[0].submit("demo", None, slow)
    orphan = store.create_job("demo", None)
    await asyncio.sleep(1.0)  # over three stale periods
    assert store.get_job(job.id).status == "running"
    assert store.get_job(orphan.id).status == "failed"
    gate.set()
    await _wait(store, job.id, "succeeded")
    # A job still running when its service stops is failed at once, not left for the sweep.
    again = await replicas[1].submit("demo", None, _forever)
    await _wait(store, again.id, "running")
    for runner in replicas:
        await runner.shutdown()
    assert store.get_job(again.id).status == "failed"
    assert store.get_job(again.id).error["message"] == "the service stopped while this job ran"


async def _forever(progress):
    await asyncio.Event().wait()
    return {}
