"""Jobs over HTTP on the fake engine: their shape, the newest-first listing with its filters and pages, and
404 for an unknown one."""

from datetime import datetime

from tests.service.support import assert_error


def test_job_endpoint_shape(client):
    job = client.app.state.icl.store.create_job("controller", "sent")
    body = client.get(f"/v1/jobs/{job.id}").json()
    created = body.pop("created_at")
    assert body.pop("updated_at") == created and datetime.fromisoformat(created).utcoffset() is not None
    assert body == {"job_id": job.id, "kind": "controller", "task": "sent", "status": "queued", "progress": 0.0,
                    "result": None, "error": None, "batch": None}


def test_unknown_job_is_404(client):
    assert_error(client.get("/v1/jobs/job-missing"), 404, "job_not_found", "job_id")


def test_jobs_are_listed_newest_first_filtered_and_paged(client):
    store = client.app.state.icl.store
    made = [store.create_job(kind, task) for kind, task in
            [("annotation", "sent"), ("controller", "sent"), ("annotation", "other"), ("annotation", "sent")]]
    store.update_job(made[0].id, status="succeeded")
    everything = client.get("/v1/jobs").json()
    assert everything["total"] == 4
    assert [j["job_id"] for j in everything["jobs"]] == [j.id for j in reversed(made)]
    sent = client.get("/v1/jobs", params={"task": "sent", "kind": "annotation"}).json()
    assert [j["job_id"] for j in sent["jobs"]] == [made[3].id, made[0].id] and sent["total"] == 2
    done = client.get("/v1/jobs", params={"status": "succeeded"}).json()
    assert [j["job_id"] for j in done["jobs"]] == [made[0].id]
    page = client.get("/v1/jobs", params={"limit": 2, "offset": 1}).json()
    assert [j["job_id"] for j in page["jobs"]] == [made[2].id, made[1].id] and page["total"] == 4


def test_job_listing_filters_are_checked(client):
    assert_error(client.get("/v1/jobs", params={"kind": "fit"}), 400, "invalid_value", "kind")
    assert_error(client.get("/v1/jobs", params={"status": "done"}), 400, "invalid_value", "status")
    assert_error(client.get("/v1/jobs", params={"limit": 0}), 400, "invalid_value", "limit")
    assert client.get("/v1/jobs", params={"task": "no-such-task"}).json() == {"jobs": [], "total": 0}


def test_a_finished_job_is_deleted_with_its_results_and_a_running_one_is_409(client):
    store = client.app.state.icl.store
    batch = store.create_batch("sent", 1, {}, "me", [(None, {"text": "x"}, None)])
    store.save_batch_outcomes(batch.id, {0: {"prediction": {"label": "a"}}})
    assert_error(client.delete(f"/v1/jobs/{batch.id}"), 409, "job_unfinished", "job_id")  # queued
    store.update_job(batch.id, status="succeeded")
    response = client.delete(f"/v1/jobs/{batch.id}")
    assert response.status_code == 204 and not response.content
    assert_error(client.get(f"/v1/jobs/{batch.id}"), 404, "job_not_found")
    assert_error(client.get(f"/v1/jobs/{batch.id}/results"), 404)
    assert_error(client.delete(f"/v1/jobs/{batch.id}"), 404, "job_not_found", "job_id")
    fit = store.create_job("controller", "sent")
    store.update_job(fit.id, status="running")
    assert_error(client.delete(f"/v1/jobs/{fit.id}"), 409, "job_unfinished", "job_id")
    assert client.get(f"/v1/jobs/{fit.id}").json()["status"] == "running"
