"""Predict over HTTP on the fake engine: shapes, defaults, calibration options, budgets, limits, failures."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.state import Runtime
from tests.fakes import FakeEmbedder, FakeScorer
from tests.service.support import EXAMPLES, TASK, assert_error, make_client, post_json


def test_predict_shapes_and_knn_demos(client, task):
    response = client.post("/v1/tasks/sent/predict", json={
        "inputs": ["great fun positive", {"text": "boring awful negative"}], "demos": 2, "calibration": "none",
        "include_prompt": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "fake-model"
    first, second = body["predictions"]
    assert first["label"] == "positive" and second["label"] == "negative"
    for p in body["predictions"]:
        assert set(p["probs"]) == {"negative", "positive"}
        assert abs(sum(p["probs"].values()) - 1) < 1e-9
        assert p["k"] == 2 and len(p["demo_ids"]) == 2
        assert p["prompt"].endswith("Label:")
    assert first["demo_ids"][-1] == "p1"  # nearest: shares "great" and "fun"
    assert body["usage"]["prompt_tokens"] == first["prompt_tokens"] + second["prompt_tokens"]
    assert body["usage"]["calibration_tokens"] == 0


def test_predict_defaults_use_task_default_k_and_the_unfitted_calibration(client, task):
    body = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"]}).json()
    assert body["predictions"][0]["k"] == 4  # all four labeled examples
    assert body["predictions"][0]["prompt"] is None
    # Before a fit, "auto" leaves kNN demonstrations uncalibrated, and says so...
    assert body["usage"]["calibration_tokens"] == 0 and body["predictions"][0]["calibration"] == "none"
    assert body["predictions"][0]["probs"] == body["predictions"][0]["uncalibrated_probs"]
    # ...per-input sets (diverse) get two domain strings per set...
    diverse = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"], "selection": "diverse"}).json()
    assert diverse["usage"]["calibration_tokens"] > 0 and diverse["predictions"][0]["calibration"] == "domain"
    # ...and random selection's one shared set gets five, estimated once for every input.
    scorer = client.app.state.icl.runtime.scorer
    before = len(scorer.calls)
    first = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun", "dull"], "selection": "random"}).json()
    assert len(scorer.calls) - before == 2 + 5
    assert first["predictions"][0]["demo_ids"] == first["predictions"][1]["demo_ids"]
    again = client.post("/v1/tasks/sent/predict", json={"inputs": ["so dull"], "selection": "random"}).json()
    assert again["usage"]["calibration_tokens"] == 0 and again["usage"]["calibration_cached_tokens"] == 0
    assert again["predictions"][0]["probs"] != again["predictions"][0]["uncalibrated_probs"]


def test_domain_calibration_calibrates_what_each_input_is_served_with(client, task):
    scorer = client.app.state.icl.runtime.scorer
    usage = {}
    for options in ("default", "reference"):
        before = len(scorer.calls)
        out = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"], "calibration": "domain",
                                                          "domain_calibration": options}).json()
        usage[options] = out["usage"]
        assert out["usage"]["total_tokens"] == (out["usage"]["prompt_tokens"] + out["usage"]["calibration_tokens"]
                                                + out["usage"]["calibration_cached_tokens"])
        assert out["predictions"][0]["probs"] != out["predictions"][0]["uncalibrated_probs"]
        assert out["predictions"][0]["calibration"] == "domain"
        assert len(scorer.calls) - before == 1 + (2 if options == "default" else 20)  # kNN sets included
    assert usage["reference"]["calibration_tokens"] > 5 * usage["default"]["calibration_tokens"] > 0
    # Explicit options leave the shared set at the default's 5 strings unless told otherwise (null: `samples`).
    for seed, options, strings in ((2, {"samples": 7}, 5), (3, {"samples": 7, "shared_set_samples": None}, 7)):
        before = len(scorer.calls)
        client.post("/v1/tasks/sent/predict", json={"inputs": ["dull"], "selection": "random", "seed": seed,
                                                    "calibration": "domain", "domain_calibration": options})
        assert len(scorer.calls) - before == 1 + strings
    alone = client.post("/v1/tasks/sent/predict", json={
        "inputs": ["great fun"], "calibration": "domain", "domain_calibration": {"samples": 3, "calibrate_knn": False}})
    assert alone.json()["usage"]["calibration_tokens"] == 0  # kNN sets left alone when asked


def test_batch_calibration_uses_the_batch_and_says_when_an_input_was_alone(client, task):
    inputs = ["great fun", "boring plot", "awful mess", "fun acting"]
    out = client.post("/v1/tasks/sent/predict", json={"inputs": inputs, "calibration": "batch"}).json()
    assert out["usage"]["calibration_tokens"] == 0  # no extra prompt
    assert {p["calibration"] for p in out["predictions"]} == {"batch"}
    raw = np.array([[p["uncalibrated_probs"][label] for label in ("negative", "positive")] for p in out["predictions"]])
    bias = raw.mean(axis=0)
    expected = raw / bias / (raw / bias).sum(axis=1, keepdims=True)
    assert np.allclose([[p["probs"][label] for label in ("negative", "positive")] for p in out["predictions"]],
                       expected)
    alone = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"], "calibration": "batch"}).json()
    assert alone["predictions"][0]["calibration"] == "none"  # no batch, no fit: uncalibrated, and it says so
    assert alone["predictions"][0]["probs"] == alone["predictions"][0]["uncalibrated_probs"]


@pytest.mark.parametrize("options", [{"samples": 0}, {"pooling": 2}, {"max_sets": 0}, {"shared_set_samples": 0},
                                     {"extra": 1}, "fast"])
def test_predict_rejects_bad_domain_calibration_options(client, task, options):
    r = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"], "domain_calibration": options})
    assert r.status_code in (400, 422)
    assert r.json()["error"]["param"].startswith("domain_calibration")


def test_predict_budget(client, task):
    free = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun", "boring"], "demos": 4,
                                                       "calibration": "none"}).json()
    budget = free["usage"]["prompt_tokens"] - 10
    fitted = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun", "boring"], "demos": 4,
                                                         "calibration": "none",
                                                         "budget": {"max_prompt_tokens": budget}}).json()
    assert fitted["usage"]["prompt_tokens"] <= budget
    assert_error(client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"],
                                                               "budget": {"max_prompt_tokens": 2}}),
                 400, "budget_too_small", "budget.max_prompt_tokens")


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"inputs": []}, 400, "inputs"),
        ({"inputs": ["a"] * 9}, 413, "inputs"),
        ({"inputs": [{"wrong": "field"}]}, 400, "inputs[0]"),
        ({"inputs": ["x" * 201]}, 413, "inputs[0]"),
        ({"inputs": ["a"], "demos": -1}, 400, "demos"),
        ({"inputs": ["a"], "demos": "many"}, 400, None),
        ({"inputs": ["a"], "demos": 65}, 400, "demos"),
        ({"inputs": ["a"], "selection": "best"}, 400, "selection"),
        ({"inputs": ["a"], "calibration": "magic"}, 400, "calibration"),
        ({"inputs": "a"}, 400, "inputs"),
        ({"inputs": [3]}, 400, None),
        ({"inputs": ["a"], "seed": -1}, 400, "seed"),
        ({"inputs": ["a\udc00"]}, 400, "inputs[0]"),
        ({"inputs": ["nul\x00"]}, 400, "inputs[0]"),
    ],
)
def test_bad_predict_requests(client, task, body, status, param):
    assert_error(post_json(client, "/v1/tasks/sent/predict", body), status, param=param)


def test_predict_unknown_task_and_context_overflow(tmp_path):
    with make_client(tmp_path, max_input_chars=100_000) as c:
        assert_error(c.post("/v1/tasks/none/predict", json={"inputs": ["a"]}), 404, "task_not_found")
        c.post("/v1/tasks", json=TASK)
        long_input = " ".join(["word"] * 600)  # the fake model's window is 512 tokens
        assert_error(c.post("/v1/tasks/sent/predict", json={"inputs": ["ok", long_input]}), 413,
                     "context_length_exceeded", "inputs[1]")


def test_engine_failure_is_503_not_500(tmp_path):
    scorer = FakeScorer()

    async def broken(prompts, continuations):
        raise RuntimeError("EngineDeadError")

    scorer.score = broken
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings, runtime=Runtime(scorer=scorer, embedder=FakeEmbedder()))) as c:
        c.post("/v1/tasks", json=TASK)
        response = c.post("/v1/tasks/sent/predict", json={"inputs": ["a"], "demos": 0})
        assert_error(response, 503, "engine_error")
        assert response.headers["retry-after"] == "5"


async def test_admission_control_answers_429_when_busy(tmp_path):
    import asyncio

    import httpx

    settings = Settings(data_dir=tmp_path, max_inflight_prompts=3)
    scorer = FakeScorer()
    gate = asyncio.Event()
    original = scorer.score

    async def slow(prompts, continuations):
        await gate.wait()
        return await original(prompts, continuations)

    scorer.score = slow
    app = create_app(settings, runtime=Runtime(scorer=scorer, embedder=FakeEmbedder()))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        await c.post("/v1/tasks", json=TASK)
        body = {"inputs": ["a", "b"], "demos": 0, "calibration": "none"}
        first = asyncio.create_task(c.post("/v1/tasks/sent/predict", json=body))
        for _ in range(100):
            if app.state.icl.inflight_prompts:
                break
            await asyncio.sleep(0.01)
        busy = await c.post("/v1/tasks/sent/predict", json=body)
        assert_error(busy, 429, "overloaded")
        assert busy.headers["retry-after"] == "2"
        gate.set()
        assert (await first).status_code == 200
        assert app.state.icl.inflight_prompts == 0


def test_domain_strings_can_draw_on_recent_queries(tmp_path):
    """With ICL_DOMAIN_RECENT_QUERIES, words of earlier queries appear in later calibration prompts."""
    with make_client(tmp_path, domain_recent_queries=4) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
        body = {"inputs": ["zebra"], "selection": "random", "calibration": "domain",
                "domain_calibration": {"samples": 40}, "include_prompt": True}
        scorer = c.app.state.icl.runtime.scorer
        c.post("/v1/tasks/sent/predict", json=body)
        first = len(scorer.calls)
        # Another seed: random selection's one set is already estimated under seed 0 (cached).
        c.post("/v1/tasks/sent/predict", json={**body, "inputs": ["quokka"], "seed": 1})
        later = [scorer.decode(ids) for ids in scorer.calls[first:]]
        assert any("zebra" in words for words in later)  # an earlier query's word, drawn into a random string
    with make_client(tmp_path / "off") as c:  # off by default
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
        c.post("/v1/tasks/sent/predict", json={**body, "inputs": ["zebra"]})
        scorer = c.app.state.icl.runtime.scorer
        first = len(scorer.calls)
        c.post("/v1/tasks/sent/predict", json={**body, "inputs": ["quokka"], "seed": 1})
        assert not any("zebra" in scorer.decode(ids) for ids in scorer.calls[first:])


def test_a_controller_that_cannot_be_read_leaves_predict_working(client, task):
    store = client.app.state.icl.store
    store.save_fit(store.get_task("sent").id, b"pickled by another version", {})
    fixed = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"], "demos": 2})
    assert fixed.status_code == 200 and fixed.json()["predictions"][0]["k"] == 2
    auto = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"]})
    assert auto.status_code == 200 and auto.json()["predictions"][0]["k"] == 4  # the default count


def test_the_service_s_count_settings_reach_every_task_once(tmp_path):
    """Predicts and batch jobs read the task's defaults from its context: the service's count unless the task
    has its own, and the service's policy for a fitted "auto"."""
    from controller.counts import TaskDefaults

    with make_client(tmp_path, default_k=3, auto_count_policy="controller") as client:
        client.post("/v1/tasks", json=TASK)
        client.post("/v1/tasks", json={**TASK, "name": "own", "default_k": 1})
        state = client.app.state.icl
        contexts = state.contexts
        assert contexts.get("sent", state.runtime.scorer).defaults == TaskDefaults(3, "controller")
        assert contexts.get("own", state.runtime.scorer).defaults == TaskDefaults(1, "controller")
        assert [t["default_k"] for t in client.get("/v1/tasks").json()["tasks"]] == [3, 1]
