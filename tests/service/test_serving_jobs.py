"""Jobs over HTTP on the fake engine: their shape, and 404 for an unknown one."""

from tests.service.support import assert_error


def test_job_endpoint_shape(client):
    job = client.app.state.icl.store.create_job("controller", "sent")
    body = client.get(f"/v1/jobs/{job.id}").json()
    assert body == {"job_id": job.id, "kind": "controller", "task": "sent", "status": "queued", "progress": 0.0,
                    "result": None, "error": None, "batch": None}


def test_unknown_job_is_404(client):
    assert_error(client.get("/v1/jobs/job-missing"), 404, "job_not_found", "job_id")
