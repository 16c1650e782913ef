"""The HTTP layer on a fake engine: contract shapes, validation, the error envelope, nothing stored on errors."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.state import Runtime
from tests.fakes import FakeEmbedder, FakeScorer

TASK = {
    "name": "sent",
    "labels": ["negative", "positive"],
    "template": "Input: {text}\nLabel: {label}",
}
EXAMPLES = [
    {"id": "p1", "input": "great fun film", "label": "positive"},
    {"id": "n1", "input": "awful boring film", "label": "negative"},
    {"id": "p2", "input": {"text": "great acting"}, "label": "positive"},
    {"id": "n2", "input": "boring plot", "label": "negative"},
    {"id": "u1", "input": "some film"},
]


def make_client(tmp_path, **overrides) -> TestClient:
    settings = Settings(**{"data_dir": tmp_path, "max_inputs": 8, "max_input_chars": 200, **overrides})
    runtime = Runtime(scorer=FakeScorer(), embedder=FakeEmbedder())
    return TestClient(create_app(settings, runtime=runtime))


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def task(client):
    assert client.post("/v1/tasks", json=TASK).status_code == 201
    assert client.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES}).status_code == 200
    return "sent"


def post_json(client, url, body):
    """Post JSON as ASCII text with escapes, so that lone surrogates (\\udc00) reach the server as a client
    could send them."""
    return client.post(url, content=json.dumps(body), headers={"content-type": "application/json"})


def assert_error(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


def test_task_lifecycle(client):
    created = client.post("/v1/tasks", json=TASK)
    assert created.status_code == 201
    body = created.json()
    assert body["verbalizers"] == {"negative": "negative", "positive": "positive"}
    assert body["n_examples"] == 0 and body["controller"] is None and body["default_k"] == 4
    assert body["separator"] == "\n\n"
    assert client.get("/v1/tasks").json()["tasks"][0]["name"] == "sent"
    assert client.get("/v1/tasks/sent").json()["template"] == TASK["template"]
    assert_error(client.post("/v1/tasks", json=TASK), 409, "name_taken", "name")
    assert client.delete("/v1/tasks/sent").status_code == 204
    assert_error(client.get("/v1/tasks/sent"), 404, "task_not_found")
    assert_error(client.delete("/v1/tasks/sent"), 404)


@pytest.mark.parametrize(
    "change, param",
    [
        ({"name": "Bad Name"}, "name"),
        ({"labels": ["only"]}, "labels"),
        ({"labels": ["a", "a"]}, "labels"),
        ({"verbalizers": {"other": "x"}}, "verbalizers"),
        ({"verbalizers": {"negative": "same", "positive": "same"}}, "verbalizers"),
        ({"template": "Input: {text}"}, "template"),
        ({"template": "Label: {label}"}, "template"),
        ({"template": 5}, "template"),
        ({"unknown_field": 1}, "unknown_field"),
        ({"labels": ["a", "b\udc00"]}, "labels[1]"),
        ({"labels": ["a", "b" * 257]}, "labels[1]"),
        ({"default_k": 65}, "default_k"),
        ({"separator": "\x00"}, "separator"),
    ],
)
def test_bad_task_definitions_are_400_and_store_nothing(client, change, param):
    assert_error(post_json(client, "/v1/tasks", {**TASK, **change}), 400, param=param)
    assert client.get("/v1/tasks").json() == {"tasks": []}


def test_malformed_json_and_wrong_types_are_400(client):
    response = client.post("/v1/tasks", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json")
    assert_error(client.post("/v1/tasks", json=["a list"]), 400)


def test_examples_added_listed_and_patched(client, task):
    listing = client.get("/v1/tasks/sent/examples").json()
    assert listing["total"] == 5 and listing["examples"][0] == {"id": "p1", "input": {"text": "great fun film"},
                                                                 "label": "positive"}
    assert client.get("/v1/tasks/sent/examples?labeled=false").json()["examples"][0]["id"] == "u1"
    assert client.get("/v1/tasks/sent/examples?labeled=true&limit=2&offset=3").json()["total"] == 4
    patched = client.patch("/v1/tasks/sent/examples/u1", json={"label": "negative"})
    assert patched.status_code == 200 and patched.json()["label"] == "negative"
    t = client.get("/v1/tasks/sent").json()
    assert (t["n_examples"], t["n_labeled"]) == (5, 5)
    assert_error(client.patch("/v1/tasks/sent/examples/nope", json={"label": "negative"}), 404, "example_not_found")
    assert_error(client.patch("/v1/tasks/sent/examples/u1", json={"label": "maybe"}), 400, "invalid_label")
    generated = client.post("/v1/tasks/sent/examples", json={"examples": [{"input": "x"}]})
    assert generated.json() == {"added": 1, "n_examples": 6, "n_labeled": 5}


@pytest.mark.parametrize(
    "examples, status, param",
    [
        ([{"input": "ok", "label": "positive"}, {"input": "bad", "label": "maybe"}], 400, "examples[1].label"),
        ([{"input": {"sentence": "x"}}], 400, "examples[0].input"),
        ([{"input": 7}], 400, None),
        ([{"id": "p1", "input": "dup of stored"}], 409, "examples[0].id"),
        ([{"id": "z", "input": "a"}, {"id": "z", "input": "b"}], 409, "examples[1].id"),
        ([{"input": "x" * 201}], 413, "examples[0].input"),
        ([], 400, "examples"),
        ([{"id": "a/b", "input": "x"}], 400, "examples[0].id"),
    ],
)
def test_bad_example_batches_store_nothing(client, task, examples, status, param):
    before = client.get("/v1/tasks/sent").json()
    assert_error(client.post("/v1/tasks/sent/examples", json={"examples": examples}), status, param=param)
    assert client.get("/v1/tasks/sent").json() == before
    assert client.get("/v1/tasks/sent/examples").json()["total"] == len(EXAMPLES)


def test_examples_for_unknown_task_is_404(client):
    assert_error(client.post("/v1/tasks/none/examples", json={"examples": EXAMPLES}), 404, "task_not_found")


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


def test_predict_defaults_use_task_default_k_and_domain_calibration(client, task):
    body = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"]}).json()
    assert body["predictions"][0]["k"] == 4  # all four labeled examples
    assert body["predictions"][0]["prompt"] is None
    # kNN demonstrations are left uncalibrated by the default domain settings...
    assert body["usage"]["calibration_tokens"] == 0
    assert body["predictions"][0]["probs"] == body["predictions"][0]["uncalibrated_probs"]
    # ...per-input sets (diverse) get two strings per set, the reference twenty...
    usage = {}
    for options in ("default", "reference"):
        out = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"], "selection": "diverse",
                                                          "domain_calibration": options}).json()
        usage[options] = out["usage"]
        assert out["usage"]["total_tokens"] == (out["usage"]["prompt_tokens"] + out["usage"]["calibration_tokens"]
                                                + out["usage"]["calibration_cached_tokens"])
        assert out["predictions"][0]["probs"] != out["predictions"][0]["uncalibrated_probs"]
    assert usage["default"]["calibration_tokens"] > 0
    assert usage["reference"]["calibration_tokens"] > 5 * usage["default"]["calibration_tokens"]
    # ...and random selection's one shared set gets five, estimated once for every input.
    scorer = client.app.state.icl.runtime.scorer
    before = len(scorer.calls)
    first = client.post("/v1/tasks/sent/predict", json={"inputs": ["great fun", "dull"], "selection": "random"}).json()
    assert len(scorer.calls) - before == 2 + 5
    assert first["predictions"][0]["demo_ids"] == first["predictions"][1]["demo_ids"]
    again = client.post("/v1/tasks/sent/predict", json={"inputs": ["so dull"], "selection": "random"}).json()
    assert again["usage"]["calibration_tokens"] == 0 and again["usage"]["calibration_cached_tokens"] == 0
    assert again["predictions"][0]["probs"] != again["predictions"][0]["uncalibrated_probs"]
    # Explicit options leave the shared set at the default's 5 strings unless told otherwise (null: `samples`).
    for seed, options, strings in ((2, {"samples": 7}, 5), (3, {"samples": 7, "shared_set_samples": None}, 7)):
        before = len(scorer.calls)
        client.post("/v1/tasks/sent/predict", json={"inputs": ["dull"], "selection": "random", "seed": seed,
                                                    "domain_calibration": options})
        assert len(scorer.calls) - before == 1 + strings
    explicit = client.post("/v1/tasks/sent/predict", json={
        "inputs": ["great fun"], "domain_calibration": {"samples": 3, "pooling": 0.5, "max_sets": None}}).json()
    assert explicit["usage"]["calibration_tokens"] > 0  # explicit options calibrate kNN sets too


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


def test_auth(tmp_path):
    with make_client(tmp_path, api_keys=["k1", "k2"]) as c:
        assert_error(c.get("/v1/tasks"), 401, "invalid_api_key")
        assert_error(c.get("/v1/tasks", headers={"Authorization": "Bearer nope"}), 401)
        assert c.get("/v1/tasks", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_body_too_large(tmp_path):
    with make_client(tmp_path, max_body_bytes=1000) as c:
        assert_error(c.post("/v1/tasks", json={**TASK, "instruction": "x" * 2000}), 413, "body_too_large")
        body = json.dumps({**TASK, "instruction": "x" * 2000}).encode()

        def chunks():  # no Content-Length: the limit is enforced while reading
            for i in range(0, len(body), 100):
                yield body[i:i + 100]

        chunked = c.post("/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
        assert_error(chunked, 413, "body_too_large")
        assert c.get("/v1/tasks").json() == {"tasks": []}
        assert 'status="413"' in c.get("/metrics").text


def test_health_models_metrics_jobs(client, task):
    assert client.get("/health").json() == {}
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake-model"
    client.post("/v1/tasks/sent/predict", json={"inputs": ["great"], "demos": 1})
    text = client.get("/metrics").text
    assert 'icl_requests_total{method="POST",route="/v1/tasks/{name}/predict",status="200"} 1.0' in text
    assert "icl_prompt_tokens_total" in text and "icl_demos_per_input_bucket" in text
    assert "icl_engine_queue_depth" in text
    assert_error(client.get("/v1/jobs/job-missing"), 404, "job_not_found")
    assert client.post("/v1/admin/reset-prefix-cache").json() == {}
    assert client.app.state.icl.runtime.scorer.resets == 1
    assert_error(client.get("/v1/nothing-here"), 404)


def test_health_503_until_engine_ready(tmp_path):
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings, runtime=None, runtime_factory=None)) as c:
        assert_error(c.get("/health"), 503, "engine_not_ready")
        assert c.post("/v1/tasks", json=TASK).status_code == 201  # tasks need no engine
        assert_error(c.post("/v1/tasks/sent/predict", json={"inputs": ["a"]}), 503)


def test_state_survives_restart(tmp_path):
    with make_client(tmp_path) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": EXAMPLES})
    with make_client(tmp_path) as c:
        assert c.get("/v1/tasks/sent").json()["n_examples"] == 5
        body = c.post("/v1/tasks/sent/predict", json={"inputs": ["great fun"], "demos": 1,
                                                      "calibration": "none"}).json()
        assert body["predictions"][0]["demo_ids"] == ["p1"]


def test_openapi_describes_the_contract(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/v1/tasks", "/v1/tasks/{name}", "/v1/tasks/{name}/examples",
                 "/v1/tasks/{name}/examples/{example_id}", "/v1/tasks/{name}/predict",
                 "/v1/tasks/{name}/controller", "/v1/tasks/{name}/annotation-plan", "/v1/jobs/{job_id}",
                 "/v1/models", "/health", "/metrics"]:
        assert path in paths


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


def test_job_endpoint_shape(client):
    job = client.app.state.icl.store.create_job("controller", "sent")
    body = client.get(f"/v1/jobs/{job.id}").json()
    assert body == {"job_id": job.id, "status": "queued", "progress": 0.0, "result": None, "error": None}


def test_huge_offset_is_400(client, task):
    assert_error(client.get("/v1/tasks/sent/examples?offset=99999999999999999999"), 400, param="offset")


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
