"""The fit (meta-controller and calibration) on the real engine: started by itself once the task has enough
labeled examples, then used by the default request; and started on request (small, to keep the suite quick)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from controller.hidden_fit import HIDDEN_COUNTS
from tests.acceptance.conftest import serve
from tests.conftest import load_split

pytestmark = pytest.mark.engine


async def _wait(client: httpx.AsyncClient, job_id: str) -> dict:
    for _ in range(1200):
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish")


async def test_fit_by_itself_then_default_request_and_refit_on_request(tmp_path, runtime):
    rows = load_split("sst2", "train", limit=40)
    async with serve(tmp_path, runtime) as client:
        await client.post("/v1/tasks", json={"name": "sst2", "labels": ["negative", "positive"],
                                             "template": "Input: {text}\nLabel: {label}"})
        examples = [{"id": f"s{i}", "input": r["text"], "label": r["label"]} for i, r in enumerate(rows)]
        await client.post("/v1/tasks/sst2/examples", json={"examples": examples})
        fit = (await client.get("/v1/tasks/sst2")).json()["fit"]
        assert fit["state"] == "running" and fit["job_id"], fit
        # While it runs a fit on request is refused, not queued twice.
        busy = await client.post("/v1/tasks/sst2/controller", json={"candidate_k": [0, 2], "train_size": 24})
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "fit_running"
        job = await _wait(client, fit["job_id"])
        assert job["status"] == "succeeded", job
        task = (await client.get("/v1/tasks/sst2")).json()
        assert task["fit"]["state"] == "fitted" and task["fit"]["pool_version"] >= 1 and task["fit"]["job_id"] is None
        summary = (await client.get("/v1/tasks/sst2/controller")).json()
        chosen = {int(k): c["method"] for k, c in summary["calibration"]["counts"].items()}
        assert set(chosen) == set(summary["candidate_k"])

        test = [r["text"] for r in load_split("sst2", "test", limit=6)]
        default = await client.post("/v1/tasks/sst2/predict", json={"inputs": test})
        assert default.status_code == 200, default.text
        for p in default.json()["predictions"]:
            if p["decision"] == "head":  # the embedding head's own probabilities, with no prompt
                assert (p["calibration"], p["k"], p["prompt_tokens"]) == ("none", 0, 0), p
            elif p["decision"] == "hidden":  # a hidden-state head's tempered probabilities, at its own count
                assert p["calibration"] == "none" and p["k"] in HIDDEN_COUNTS and p["prompt_tokens"] > 0, p
            else:
                assert p["calibration"].startswith(chosen[p["k"]]), (p["calibration"], chosen)
            assert abs(sum(p["probs"].values()) - 1) < 1e-6
        # Deterministic: the same input alone gets the same probabilities as in the batch.
        alone = await client.post("/v1/tasks/sst2/predict", json={"inputs": test[:1]})
        assert alone.json()["predictions"][0]["probs"] == pytest.approx(
            default.json()["predictions"][0]["probs"], abs=2e-3)

        started = await client.post("/v1/tasks/sst2/controller",
                                    json={"candidate_k": [0, 2], "train_size": 24, "seed": 0})
        assert started.status_code == 202, started.text
        job = await _wait(client, started.json()["job_id"])
        assert job["status"] == "succeeded", job
        summary = (await client.get("/v1/tasks/sst2/controller")).json()
        fixed = {f["k"]: f for f in summary["validation"]["fixed"]}
        assert fixed[2]["mean_prompt_tokens"] > fixed[0]["mean_prompt_tokens"] > 0
        assert summary["metadata"]["model"] == "SmolLM2-135M-Instruct"

        auto = await client.post("/v1/tasks/sst2/predict", json={"inputs": test, "calibration": "none"})
        assert auto.status_code == 200, auto.text
        # The counts asked and the task's default count, which every fit weighs: what serves is one of them.
        assert summary["candidate_k"] == [0, 2, 4]
        for p in auto.json()["predictions"]:  # or a hidden-state head, at one of its own counts
            assert p["k"] in (HIDDEN_COUNTS if p["decision"] == "hidden" else {0, 2, 4}), p
