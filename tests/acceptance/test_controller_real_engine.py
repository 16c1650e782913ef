"""The meta-controller trained on the real engine and used by demos=auto (small, to keep the suite quick)."""

from __future__ import annotations

import asyncio

import pytest

from tests.acceptance.conftest import serve
from tests.conftest import load_split

pytestmark = pytest.mark.engine


async def test_train_controller_and_predict_auto(tmp_path, runtime):
    rows = load_split("sst2", "train", limit=40)
    async with serve(tmp_path, runtime) as client:
        await client.post("/v1/tasks", json={"name": "sst2", "labels": ["negative", "positive"],
                                             "template": "Input: {text}\nLabel: {label}"})
        examples = [{"id": f"s{i}", "input": r["text"], "label": r["label"]} for i, r in enumerate(rows)]
        await client.post("/v1/tasks/sst2/examples", json={"examples": examples})
        started = await client.post("/v1/tasks/sst2/controller",
                                    json={"candidate_k": [0, 2], "train_size": 24, "seed": 0})
        assert started.status_code == 202
        for _ in range(600):
            job = (await client.get(f"/v1/jobs/{started.json()['job_id']}")).json()
            if job["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.5)
        assert job["status"] == "succeeded", job
        summary = (await client.get("/v1/tasks/sst2/controller")).json()
        fixed = {f["k"]: f for f in summary["validation"]["fixed"]}
        assert fixed[2]["mean_prompt_tokens"] > fixed[0]["mean_prompt_tokens"] > 0
        assert summary["metadata"]["model"] == "SmolLM2-135M-Instruct"

        test = [r["text"] for r in load_split("sst2", "test", limit=6)]
        auto = await client.post("/v1/tasks/sst2/predict", json={"inputs": test, "calibration": "none"})
        assert auto.status_code == 200, auto.text
        assert {p["k"] for p in auto.json()["predictions"]} <= {0, 2}
