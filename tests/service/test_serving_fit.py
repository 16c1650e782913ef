"""Meta-controller endpoints on the fake engine: training job, summary, auto counts, budgets, failures."""

from __future__ import annotations

import asyncio
import threading
import time

from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.state import Runtime
from tests.fakes import FakeEmbedder, FakeHiddenScorer, FakeScorer
from tests.service.support import TASK, assert_error

NOT_FITTED = {"state": "none", "pool_version": None, "job_id": None, "model": None, "fit_id": None, "expected": None}


def _examples(n):
    # The fake model is right when the query names its label: half the inputs do, half need help.
    out = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        text = f"{label} film number {i}" if i % 4 < 2 else f"film number {i} plain"
        out.append({"id": f"e{i}", "input": text, "label": label})
    return out


def _wait(client, job_id):
    for _ in range(500):
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def _client(tmp_path, scorer, **overrides):
    settings = Settings(data_dir=tmp_path, **{"auto_fit": False, **overrides})
    return TestClient(create_app(settings, runtime=Runtime(scorer=scorer, embedder=FakeEmbedder())))


def test_too_few_labeled_examples_is_400_saying_how_many(tmp_path):
    with _client(tmp_path, FakeScorer()) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(10)})
        response = c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 2, 4]})
        assert_error(response, 400, "not_enough_labeled_examples")
        assert "at least 24" in response.json()["error"]["message"]
        assert_error(c.post("/v1/tasks/none/controller", json={}), 404)
        assert_error(c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 99]}), 400)
        assert_error(c.get("/v1/tasks/sent/controller"), 404, "controller_not_found")


def test_train_use_and_delete_controller(tmp_path):
    scorer = FakeScorer()
    with _client(tmp_path, scorer) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(80)})
        started = c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 1, 2], "train_size": 40})
        assert started.status_code == 202
        job = _wait(c, started.json()["job_id"])
        assert job["status"] == "succeeded" and job["progress"] == 1.0
        summary = c.get("/v1/tasks/sent/controller").json()
        # The counts asked, and the task's default count (4), which every fit weighs.
        assert summary["candidate_k"] == [0, 1, 2, 4] and summary["train_size"] == 40
        assert [f["k"] for f in summary["validation"]["fixed"]] == [0, 1, 2, 4]
        choice = summary["choice"]
        assert choice["option"] in {c["option"] for c in choice["candidates"]} and "k=4" in {
            c["option"] for c in choice["candidates"]}
        assert choice["reason"].startswith(choice["option"] + ":")
        low, high = choice["macro_f1_interval"]
        assert low <= choice["macro_f1"] <= high
        assert set(summary["validation"]["controller"]) == {"accuracy", "mean_k", "mean_prompt_tokens", "macro_f1"}
        # The confidence cascade, fitted on every held-back example and validated as the controller is.
        validation = summary["validation"]
        assert validation["calibrated"] and {"cascade", "combined"} <= set(validation)
        assert set(validation["cascade"]["stages"]) <= {0, 1, 2}
        cascade = summary["cascade"]
        assert cascade["stages"] and len(cascade["thresholds"]) == len(cascade["stages"]) - 1
        assert summary["cost"]["prompt_tokens"] > 0 and "dtype" in summary["cost"]
        assert summary["metadata"]["model"] == "fake-model"
        assert c.get("/v1/tasks/sent").json()["controller"] == summary
        assert job["result"] == summary
        assert summary["fit_id"].startswith("fit-") and c.get("/v1/tasks/sent").json()["fit"]["fit_id"] == \
            summary["fit_id"]

        inputs = ["positive film again", "film again plain", "negative film", "another plain film"]
        auto = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "calibration": "none"}).json()
        assert {p["k"] for p in auto["predictions"]} <= {0, 1, 2}
        assert (auto["demos_policy"], auto["fit"]) == ("cascade", "fitted")
        assert {p["fit_id"] for p in auto["predictions"]} == {summary["fit_id"]}  # the fit chose the counts
        for p in auto["predictions"]:  # the answering stage's count, after every earlier stage's
            assert p["stages"][-1] == p["k"] and p["stages"] == sorted(p["stages"])
            assert p["stages"][:-1] == cascade["stages"][:len(p["stages"]) - 1]
        assert auto["usage"]["prompt_tokens"] == sum(p["prompt_tokens"] for p in auto["predictions"])
        assert auto["usage"]["computed_tokens"] == auto["usage"]["total_tokens"] - auto["usage"]["cached_tokens"]
        fixed = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "demos": 2, "calibration": "none"}).json()
        assert {p["fit_id"] for p in fixed["predictions"]} == {None}  # nothing of the fit took part
        calibrated = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "demos": 2}).json()
        assert {p["fit_id"] for p in calibrated["predictions"]} == {summary["fit_id"]}  # its fitted calibration
        # The fit took no part: the request's own mean ("batch" over four inputs); random selection, which the
        # knn fit does not cover (the unfitted default calibrates it).
        batch = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "demos": 2, "calibration": "batch"}).json()
        assert {(p["calibration"], p["fit_id"]) for p in batch["predictions"]} == {("batch", None)}
        other = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "demos": 2, "selection": "random"}).json()
        assert {p["fit_id"] for p in other["predictions"]} == {None}
        lone = c.post("/v1/tasks/sent/predict", json={"inputs": inputs[:1], "demos": 2, "calibration": "batch"})
        assert [(p["calibration"], p["fit_id"]) for p in lone.json()["predictions"]] == [
            ("batch:fitted", summary["fit_id"])]
        budget = (auto["usage"]["prompt_tokens"] + fixed["usage"]["prompt_tokens"]) // 2
        within = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "calibration": "none",
                                                        "budget": {"max_prompt_tokens": budget}}).json()
        assert within["usage"]["prompt_tokens"] <= budget
        assert_error(c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "budget": {"max_prompt_tokens": 5}}),
                     400, "budget_too_small")

        # A failing job says why and leaves the previous controller in place.
        async def broken(prompts, continuations):
            raise RuntimeError("engine went away")

        scorer.score = broken
        failed = _wait(c, c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 4]}).json()["job_id"])
        assert failed["status"] == "failed" and "engine went away" in failed["error"]["message"]
        assert c.get("/v1/tasks/sent/controller").json() == summary

    with _client(tmp_path, FakeScorer()) as c:  # survives a restart
        assert c.get("/v1/tasks/sent/controller").json() == summary
        assert c.delete("/v1/tasks/sent/controller").status_code == 204
        assert_error(c.get("/v1/tasks/sent/controller"), 404)
        assert c.get("/v1/tasks/sent").json()["controller"] is None
        assert_error(c.delete("/v1/tasks/sent/controller"), 404)


def test_the_service_fits_a_task_by_itself_and_refits_as_it_grows(tmp_path):
    with _client(tmp_path, FakeScorer(), auto_fit=True, auto_fit_min_labeled=40) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(30)})
        assert c.get("/v1/tasks/sent").json()["fit"] == NOT_FITTED
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(40)[30:]})  # 40 labeled: it starts
        fit = c.get("/v1/tasks/sent").json()["fit"]
        assert fit["state"] == "running" and fit["job_id"]
        # A fit asked for while one runs gets 409 with the running job; the running one goes on.
        busy = c.post("/v1/tasks/sent/controller", json={})
        assert_error(busy, 409, "fit_running")
        assert fit["job_id"] in busy.json()["error"]["message"]
        assert _wait(c, fit["job_id"])["status"] == "succeeded"
        task = c.get("/v1/tasks/sent").json()
        assert task["fit"] == {"state": "fitted", "pool_version": 2, "job_id": None, "model": "fake-model",
                               "fit_id": task["controller"]["fit_id"],
                               "expected": task["controller"]["choice"]["reason"]}
        assert task["controller"]["metadata"]["n_labeled"] == 40
        assert set(task["controller"]["calibration"]["counts"]) == {"0", "1", "2", "4", "16"}  # the default counts
        assert task["controller"]["cost"]["prompt_tokens"] > 0
        # Grown by less than half: no refit; by half: a refit, at the new pool version.
        more = [{"id": f"x{i}", "input": f"film {i}", "label": "positive"} for i in range(20)]
        c.post("/v1/tasks/sent/examples", json={"examples": more[:19]})
        assert c.get("/v1/tasks/sent").json()["fit"]["state"] == "fitted"
        c.post("/v1/tasks/sent/examples", json={"examples": more[19:]})
        refit = c.get("/v1/tasks/sent").json()["fit"]
        assert refit["state"] == "running"
        _wait(c, refit["job_id"])
        assert c.get("/v1/tasks/sent").json()["fit"]["pool_version"] == 4


def test_fitted_auto_calibration_is_the_same_whatever_the_companions(tmp_path):
    with _client(tmp_path, FakeScorer()) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(80)})
        _wait(c, c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 1, 2], "train_size": 40}).json()[
            "job_id"])
        fitted = c.get("/v1/tasks/sent/controller").json()["calibration"]
        assert fitted["selection"] == "knn"
        for figures in fitted["counts"].values():
            assert figures["method"] in figures["validation"] and {"macro_f1", "ece", "log_loss"} <= set(
                figures["validation"]["none"])
        inputs = ["positive film again", "film again plain", "negative film", "another plain film"]
        together = c.post("/v1/tasks/sent/predict", json={"inputs": inputs}).json()["predictions"]
        shuffled = c.post("/v1/tasks/sent/predict", json={"inputs": inputs[::-1]}).json()["predictions"][::-1]
        for i, text in enumerate(inputs):
            alone = c.post("/v1/tasks/sent/predict", json={"inputs": [text]}).json()["predictions"][0]
            assert alone["probs"] == together[i]["probs"] == shuffled[i]["probs"]
            method = fitted["counts"][str(alone["k"])]["method"]
            assert alone["calibration"] == ("batch:fitted" if method == "batch" else method)


def test_a_refit_asks_what_the_fit_was_asked_and_another_model_s_fit_is_not_served(tmp_path):
    with _client(tmp_path, FakeScorer(), auto_fit=True, auto_fit_min_labeled=40) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(39)})
        asked = {"candidate_k": [0, 2], "train_size": 24, "selection": "random", "seed": 3}
        _wait(c, c.post("/v1/tasks/sent/controller", json=asked).json()["job_id"])
        assert c.get("/v1/tasks/sent/controller").json()["request"] == asked
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(60)[39:]})  # grown by half: a refit
        _wait(c, c.get("/v1/tasks/sent").json()["fit"]["job_id"])
        refit = c.get("/v1/tasks/sent/controller").json()
        assert (refit["request"], refit["selection"], refit["candidate_k"]) == (asked, "random", [0, 2, 4])
        assert refit["metadata"]["n_labeled"] == 60

    other = FakeScorer()
    other.model_name = "another-model"
    with _client(tmp_path, other, auto_fit=True, auto_fit_min_labeled=40) as c:
        # The stored fit is the other model's: "auto" serves the unfitted default, and the next upload refits.
        stored = c.get("/v1/tasks/sent").json()
        # Nor does it say what the other model's fit expected.
        assert stored["fit"] == {"state": "other_model", "pool_version": 2, "job_id": None, "model": "fake-model",
                                 "fit_id": stored["controller"]["fit_id"], "expected": None}
        got = c.post("/v1/tasks/sent/predict", json={"inputs": ["film again"], "selection": "random"}).json()
        assert got["predictions"][0]["calibration"] in ("domain", "none")
        assert (got["demos_policy"], got["fit"]) == ("default", "other_model")
        assert got["predictions"][0]["fit_id"] is None  # the other model's fit is not applied
        c.post("/v1/tasks/sent/examples", json={"examples": [{"input": "one more film", "label": "positive"}]})
        fit = c.get("/v1/tasks/sent").json()["fit"]
        assert fit["state"] == "running"
        _wait(c, fit["job_id"])
        assert c.get("/v1/tasks/sent/controller").json()["metadata"]["model"] == "another-model"


class FailingScorer(FakeScorer):
    """A model that, while ``failing`` is set, fails every prompt once ``release`` is (so that a test can see
    the job running first)."""

    failing = False

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    async def score(self, prompts, continuations):
        if self.failing:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            raise RuntimeError("the engine fell over")
        return await super().score(prompts, continuations)


def test_a_failed_automatic_fit_is_not_retried_on_every_upload(tmp_path):
    scorer = FailingScorer()
    with _client(tmp_path, scorer, auto_fit=True, auto_fit_min_labeled=40) as c:
        c.post("/v1/tasks", json=TASK)
        scorer.failing = True
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(40)})
        first = c.get("/v1/tasks/sent").json()["fit"]["job_id"]
        scorer.release.set()
        assert _wait(c, first)["status"] == "failed"
        scorer.failing = False
        added = c.post("/v1/tasks/sent/examples", json={"examples": _examples(45)[40:]})
        assert added.status_code == 200
        assert c.get("/v1/tasks/sent").json()["fit"] == NOT_FITTED
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(60)[45:]})  # grown by half since: again
        again = c.get("/v1/tasks/sent").json()["fit"]
        assert again["state"] == "running" and again["job_id"] != first
        assert _wait(c, again["job_id"])["status"] == "succeeded"


def test_tasks_due_a_fit_are_fitted_when_the_service_starts(tmp_path):
    with _client(tmp_path, FakeScorer()) as c:  # automatic fits off: 45 labeled examples, no fit
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(45)})
        assert c.get("/v1/tasks/sent").json()["fit"]["state"] == "none"
    with _client(tmp_path, FakeScorer(), auto_fit=True) as c:
        for _ in range(500):
            fit = c.get("/v1/tasks/sent").json()["fit"]
            if fit["state"] != "none":
                break
            time.sleep(0.02)
        assert fit["state"] in ("running", "fitted"), fit
        if fit["job_id"]:
            assert _wait(c, fit["job_id"])["status"] == "succeeded"
        assert c.get("/v1/tasks/sent").json()["fit"]["state"] == "fitted"


class HeldScorer(FakeScorer):
    """A model whose prompts wait until ``release`` is set (so that a test can act while a fit runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.asked = threading.Event()

    async def score(self, prompts, continuations):
        self.asked.set()
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        return await super().score(prompts, continuations)


def test_examples_uploaded_while_a_fit_runs_get_their_refit_when_it_ends(tmp_path):
    scorer = HeldScorer()
    with _client(tmp_path, scorer, auto_fit=True, auto_fit_min_labeled=40) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(40)})
        first = c.get("/v1/tasks/sent").json()["fit"]["job_id"]
        assert scorer.asked.wait(10)  # the fit has read its 40 examples and waits on the model
        # Grown by half while the first fit runs: nothing can start now, so the refit follows the first fit.
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(60)[40:]})
        assert c.get("/v1/tasks/sent").json()["fit"]["job_id"] == first
        scorer.release.set()
        assert _wait(c, first)["status"] == "succeeded"
        for _ in range(500):
            fit = c.get("/v1/tasks/sent").json()["fit"]
            if fit["pool_version"] == 2 and fit["state"] == "fitted":
                break
            if fit["job_id"] not in (None, first):
                assert _wait(c, fit["job_id"])["status"] == "succeeded"
            time.sleep(0.02)
        assert fit == {"state": "fitted", "pool_version": 2, "job_id": None, "model": "fake-model",
                       "fit_id": fit["fit_id"], "expected": fit["expected"]} and fit["fit_id"].startswith("fit-")
        assert c.get("/v1/tasks/sent/controller").json()["metadata"]["n_labeled"] == 60


def test_a_fit_stored_with_a_seed_above_today_s_cap_is_still_described(tmp_path):
    with _client(tmp_path, FakeScorer()) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(60)})
        _wait(c, c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 2]}).json()["job_id"])
        store = c.app.state.icl.store
        task = store.get_task("sent")
        stored = store.load_fit(task.id)
        summary = {**stored.summary, "request": {**stored.summary["request"], "seed": 2**63 - 1}}
        store.save_fit(task.id, stored.blob, summary)
        assert c.get("/v1/tasks/sent/controller").json()["request"]["seed"] == 2**63 - 1
        assert c.get("/v1/tasks").status_code == 200


def test_a_fit_of_a_deleted_task_is_not_saved_onto_the_task_created_again(tmp_path):
    """SQLite gives a task created again the deleted task's id: the old fit must neither land on it nor keep
    the new task from being fitted by itself."""
    scorer = HeldScorer()
    with _client(tmp_path, scorer, auto_fit=True, auto_fit_min_labeled=40) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(80)})
        old = c.get("/v1/tasks/sent").json()["fit"]["job_id"]
        assert old and scorer.asked.wait(10)
        assert c.delete("/v1/tasks/sent").status_code == 204
        failed = c.get(f"/v1/jobs/{old}").json()  # at once: the task created again must not wait behind it
        assert failed["status"] == "failed" and failed["error"]["type"] == "task_deleted"
        c.post("/v1/tasks", json=TASK)
        scorer.release.set()
        assert c.get("/v1/tasks/sent").json()["fit"] == NOT_FITTED
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(50)})  # fewer than the deleted task had
        fit = c.get("/v1/tasks/sent").json()["fit"]
        assert fit["state"] == "running"
        assert _wait(c, fit["job_id"])["status"] == "succeeded"
        assert c.get("/v1/tasks/sent").json()["controller"]["metadata"]["n_labeled"] == 50


def test_decision_forces_the_embedding_head_or_the_label_tokens(tmp_path):
    inputs = ["positive film here", "film plain words", "negative film there"]
    with _client(tmp_path, FakeScorer()) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(80)})
        assert_error(c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "decision": "head"}), 409, "no_head")
        assert_error(c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "decision": "head", "demos": 2}),
                     400, "invalid_value")
        assert c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "decision": "sideways"}).status_code == 400
        started = c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 1, 2], "train_size": 40})
        assert _wait(c, started.json()["job_id"])["status"] == "succeeded"
        head = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "decision": "head", "include_prompt": True})
        assert head.status_code == 200, head.text
        body = head.json()
        assert body["demos_policy"] == "head" and body["usage"]["prompt_tokens"] == 0
        assert all((p["decision"], p["k"], p["stages"], p["prompt"]) == ("head", 0, [], None)
                   for p in body["predictions"])
        fit_id = c.get("/v1/tasks/sent/controller").json()["fit_id"]
        assert fit_id and {p["fit_id"] for p in body["predictions"]} == {fit_id}  # the fit's head answered
        tokens = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "decision": "tokens"}).json()
        assert {p["decision"] for p in tokens["predictions"]} == {"tokens"}
        assert all(p["prompt_tokens"] > 0 for p in tokens["predictions"])


def test_decision_hidden_serves_the_fits_hidden_state_head(tmp_path):
    inputs = ["positive film here", "film plain words", "negative film there"]
    scorer = FakeHiddenScorer()
    with _client(tmp_path, scorer) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(80)})
        assert_error(c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "decision": "hidden"}), 409, "no_head")
        assert_error(c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "decision": "hidden", "demos": 1}),
                     400, "invalid_value")
        started = c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 1, 2], "train_size": 40})
        assert _wait(c, started.json()["job_id"])["status"] == "succeeded"
        report = c.get("/v1/tasks/sent/controller").json()
        served = report["hidden_head"]
        assert served["examples"] == 80 and [o["count"] for o in served["others"]] == [1 - served["count"]]
        assert {"hidden k=0", "hidden k=1"} <= {o["option"] for o in report["choice"]["candidates"]}
        read = len(scorer.hidden_calls)
        hidden = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "decision": "hidden", "include_prompt": True})
        assert hidden.status_code == 200, hidden.text
        body = hidden.json()
        assert body["demos_policy"] == "hidden" and len(scorer.hidden_calls) == read + len(inputs)
        for p in body["predictions"]:
            assert (p["decision"], p["k"], len(p["demo_ids"])) == ("hidden", served["count"], served["count"])
            assert p["prompt_tokens"] == p["computed_tokens"] > 0 and abs(sum(p["probs"].values()) - 1) < 1e-6
            assert p["fit_id"] == report["fit_id"] is not None
        # The label tokens and the embedding head stay a request away.
        tokens = c.post("/v1/tasks/sent/predict", json={"inputs": inputs, "decision": "tokens"}).json()
        assert {p["decision"] for p in tokens["predictions"]} == {"tokens"}
        batch = c.post("/v1/tasks/sent/batches", json={"inputs": inputs, "decision": "hidden"})
        assert batch.status_code == 202, batch.text
        assert _wait(c, batch.json()["job_id"])["status"] == "succeeded"
        results = c.get(f"/v1/jobs/{batch.json()['job_id']}/results").json()["results"]
        assert [r["prediction"]["decision"] for r in results] == ["hidden"] * len(inputs), results


def test_a_hidden_state_head_is_not_served_by_an_engine_without_hidden_states(tmp_path):
    from service.serving_fit import serves_hidden

    with _client(tmp_path, FakeHiddenScorer()) as c:
        c.post("/v1/tasks", json=TASK)
        c.post("/v1/tasks/sent/examples", json={"examples": _examples(80)})
        started = c.post("/v1/tasks/sent/controller", json={"candidate_k": [0, 1, 2], "train_size": 40})
        assert _wait(c, started.json()["job_id"])["status"] == "succeeded"
        assert c.post("/v1/tasks/sent/predict", json={"inputs": ["great"], "decision": "hidden"}).status_code == 200
    with _client(tmp_path, FakeScorer()) as c:  # the same store, served by an engine that reads none
        assert_error(c.post("/v1/tasks/sent/predict", json={"inputs": ["great"], "decision": "hidden"}), 409,
                     "no_head")
        assert c.post("/v1/tasks/sent/predict", json={"inputs": ["great"]}).status_code == 200
    assert serves_hidden({"cascade": {"stages": [-2]}}) and not serves_hidden({"cascade": {"stages": [-1, 2]}})
