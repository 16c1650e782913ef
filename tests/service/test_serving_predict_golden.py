"""Golden answers of the predict path on the fake engine: a grid of requests (selection x count policy x
calibration, domain-calibration variants, bias-cache hits, trained controllers, two-stage vote-k) whose labels,
probabilities, demonstrations, usage, and every prompt the engine was sent (inputs' and calibration's, in the
order sent) must stay as recorded, with ``/openapi.json``.

The fake scorer reads only the text after the last blank line, so probabilities alone cannot see demonstration
order or which bias was applied; the recorded prompts can. A deliberate change of behaviour rewrites the files:
``ICL_UPDATE_GOLDEN=1 python -m pytest tests/service/test_serving_predict_golden.py`` (then read the diff)."""

from __future__ import annotations

import json
import math
import os
import pickle
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from controller.cascade import HEAD_STAGE, Cascade
from service.app import create_app
from service.config import Settings
from service.state import Runtime
from tests.fakes import FakeEmbedder, FakeScorer

GOLDEN = Path(__file__).parent / "golden"
TOLERANCE = 1e-6

GOOD = ["good", "great", "fun", "lovely"]
BAD = ["bad", "dull", "awful", "boring"]
MEH = ["okay", "fine", "average", "plain"]
FILLER = ["film", "plot", "acting", "music", "story", "the", "a", "was", "very", "quite", "and", "ending"]
LABEL_WORDS = {"negative": BAD, "neutral": MEH, "positive": GOOD}

SENTIMENT = {
    "name": "golden-sentiment",
    "labels": ["negative", "neutral", "positive"],
    "verbalizers": {"negative": "bad", "neutral": "okay", "positive": "good"},
    "template": "Review: {text}\nSentiment: {label}",
}
ENTAILMENT = {
    "name": "golden-entailment",
    "labels": ["entailment", "not_entailment"],
    "verbalizers": {"entailment": "yes", "not_entailment": "no"},
    "template": "Premise: {premise}\nHypothesis: {hypothesis}\nAnswer: {label}",
    "instruction": "Does the premise entail the hypothesis? Answer yes or no.",
    "default_k": 2,
}


def _words(i: int, n: int) -> list[str]:
    """n filler words, a deterministic function of i (no RNG whose stream could change between versions)."""
    return [FILLER[(i * 5 + j * 7 + j * j) % len(FILLER)] for j in range(n)]


def sentiment_examples() -> list[dict[str, Any]]:
    examples = []
    for i in range(60):
        label = SENTIMENT["labels"][(i * 7) % 3]
        cue = LABEL_WORDS[label][(i // 3) % 4]
        words = _words(i, 3 + i % 5)
        words.insert(i % len(words), cue)
        if i % 4 == 0:  # some inputs name another label's verbalizer: the fake model is not always right
            words.append(SENTIMENT["verbalizers"][SENTIMENT["labels"][(i * 7 + 1) % 3]])
        examples.append({"id": f"s{i}", "input": " ".join(words), "label": label})
    for i in range(60, 72):  # unlabeled: material for annotation plans and domain-context words
        examples.append({"id": f"u{i}", "input": " ".join([*_words(i, 4), GOOD[i % 4], BAD[i % 3]])})
    return examples


def entailment_examples() -> list[dict[str, Any]]:
    examples = []
    for i in range(30):
        label = ENTAILMENT["labels"][i % 2]
        premise = " ".join(_words(i, 6))
        hypothesis = " ".join(_words(i, 3)) if label == "entailment" else " ".join(_words(i + 11, 3) + ["no"])
        examples.append({"id": f"e{i}", "input": {"premise": premise, "hypothesis": hypothesis}, "label": label})
    return examples


SENTIMENT_INPUTS = [
    "the acting was good and fun",
    "a dull plot and boring music",
    "quite okay story",
    "the ending was lovely but the film was bad",
]
LONG_INPUT = " ".join(_words(3, 40) + ["good"])


def _prediction_grid() -> list[tuple[str, dict[str, Any]]]:
    """(label, body) for the sentiment task before any controller is trained."""
    grid = []
    for selection in ("knn", "random", "diverse"):
        for count, extra in (("fixed", {"demos": 3}), ("auto", {}),
                             ("budget", {"demos": 4, "budget": {"max_prompt_tokens": 110}})):
            for calibration in ("none", "contextual", "domain", "batch", "auto"):
                grid.append((f"{selection}/{count}/{calibration}",
                             {"inputs": SENTIMENT_INPUTS, "selection": selection, "calibration": calibration,
                              **extra}))
    return grid


def _variants() -> list[tuple[str, dict[str, Any]]]:
    variants: list[tuple[str, dict[str, Any]]] = []
    options: list[tuple[str, Any]] = [
        ("reference", "reference"),
        ("samples3", {"samples": 3}),
        ("shared_set_null", {"samples": 3, "shared_set_samples": None}),
        ("pooling_max_sets", {"samples": 2, "pooling": 0.5, "max_sets": 2}),
        ("no_knn", {"samples": 2, "calibrate_knn": False}),
        ("pooled_everything", {"samples": 1, "pooling": 1.0, "max_sets": 1}),
    ]
    for selection in ("knn", "random", "diverse"):
        for name, value in options:
            variants.append((f"domain_calibration/{name}/{selection}",
                             {"inputs": SENTIMENT_INPUTS, "demos": 3, "selection": selection, "seed": 11,
                              "domain_calibration": value}))
    repeated = {"inputs": SENTIMENT_INPUTS[:2], "demos": 2, "selection": "random", "seed": 4}
    variants += [("cache/random/first", repeated), ("cache/random/again", repeated),
                 ("cache/random/other_inputs", {**repeated, "inputs": SENTIMENT_INPUTS[2:]})]
    contextual = {"inputs": SENTIMENT_INPUTS[:3], "demos": 2, "calibration": "contextual"}
    variants += [("cache/knn_contextual/first", contextual), ("cache/knn_contextual/again", contextual)]
    variants += [
        ("zero_shot/domain", {"inputs": SENTIMENT_INPUTS, "demos": 0}),
        ("zero_shot/contextual", {"inputs": SENTIMENT_INPUTS, "demos": 0, "calibration": "contextual"}),
        ("seed/random/5", {"inputs": SENTIMENT_INPUTS, "demos": 3, "selection": "random", "seed": 5}),
        ("include_prompt", {"inputs": SENTIMENT_INPUTS[:2], "demos": 2, "include_prompt": True}),
        ("window/knn/8", {"inputs": [LONG_INPUT, "fun"], "demos": 8, "calibration": "contextual"}),
        ("window/random/8", {"inputs": [LONG_INPUT, "fun"], "demos": 8, "selection": "random"}),
        ("window/diverse/8", {"inputs": [LONG_INPUT, "fun"], "demos": 8, "selection": "diverse"}),
        ("budget/tight/knn", {"inputs": SENTIMENT_INPUTS, "demos": 8, "budget": {"max_prompt_tokens": 70}}),
        ("budget/tight/random", {"inputs": SENTIMENT_INPUTS, "demos": 8, "selection": "random",
                                 "budget": {"max_prompt_tokens": 70}}),
        ("budget/too_small", {"inputs": SENTIMENT_INPUTS, "budget": {"max_prompt_tokens": 20}}),
        ("dict_input", {"inputs": [{"text": "lovely music"}], "demos": 1}),
    ]
    return variants


def _after_training() -> list[tuple[str, dict[str, Any]]]:
    grid = []
    for selection in ("knn", "random", "diverse"):
        for calibration in ("none", "contextual", "domain", "batch", "auto"):
            grid.append((f"trained/{selection}/auto/{calibration}",
                         {"inputs": SENTIMENT_INPUTS, "selection": selection, "calibration": calibration}))
            grid.append((f"trained/{selection}/auto_budget/{calibration}",
                         {"inputs": SENTIMENT_INPUTS, "selection": selection, "calibration": calibration,
                          "budget": {"max_prompt_tokens": 90}}))
    grid.append(("trained/auto/budget_too_small", {"inputs": SENTIMENT_INPUTS, "budget": {"max_prompt_tokens": 20}}))
    grid.append(("trained/fixed_ignores_controller", {"inputs": SENTIMENT_INPUTS, "demos": 2}))
    grid.append(("trained/batch/alone", {"inputs": SENTIMENT_INPUTS[:1], "calibration": "batch"}))
    grid.append(("trained/default/alone", {"inputs": SENTIMENT_INPUTS[1:2]}))
    return grid


def _entailment_inputs() -> list[dict[str, str]]:
    return [{"premise": " ".join(_words(40, 6)), "hypothesis": " ".join(_words(40, 3))},
            {"premise": " ".join(_words(41, 5)), "hypothesis": "no music"}]


def _entailment_grid() -> list[tuple[str, dict[str, Any]]]:
    return [(f"entailment/{selection}/{calibration}",
             {"inputs": _entailment_inputs(), "selection": selection, "calibration": calibration})
            for selection in ("knn", "random") for calibration in ("none", "contextual", "domain")]


class DemoReadingScorer(FakeScorer):
    """The fake scorer, plus what the demonstrations say: each verbalizer in a demonstration adds 0.4 / d to
    its label, d = 1 for the demonstration next to the query. So demonstrations, their order and the bias of
    a set change the answers (and the controller has counts to choose among)."""

    async def score(self, prompts, continuations):
        out = await super().score(prompts, continuations)
        for prompt, scored in zip(prompts, out, strict=True):
            words = self.decode(prompt)
            segments, current = [], []
            for a, b in zip(words, [*words[1:], ""], strict=True):
                current.append(a)
                if a == b == "\n":
                    segments.append(current)
                    current = []
            for d, segment in enumerate(reversed(segments), start=1):
                for j, c in enumerate(continuations):
                    scored.label_logprobs[j] += 0.4 / d * sum(w in segment for w in c.split())
        return out


class Recorder:
    """Posts requests and records, for each, its answer and the prompts the fake engine was sent."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.scorer: FakeScorer = client.app.state.icl.runtime.scorer
        self.records: dict[str, Any] = {}

    def predict(self, task: str, label: str, body: dict[str, Any]) -> None:
        assert label not in self.records, label
        before = len(self.scorer.calls)
        response = self.client.post(f"/v1/tasks/{task}/predict", json=body)
        sent = [" ".join(self.scorer.decode(ids)) for ids in self.scorer.calls[before:]]
        if response.status_code != 200:
            error = response.json()["error"]
            self.records[label] = {"status": response.status_code, "code": error["code"], "param": error["param"],
                                   "message": error["message"], "engine_prompts": sent}
            return
        answer = response.json()
        n = len(answer["predictions"])
        self.records[label] = {
            "demos_policy": answer["demos_policy"],
            "predictions": [{**{key: p[key] for key in ("label", "probs", "uncalibrated_probs", "k", "demo_ids",
                                                        "prompt_tokens", "stages", "prompt", "calibration",
                                                        "decision")},
                             "answered_by_fit": p["fit_id"] is not None}  # the id is a time: whether it is set
                            for p in answer["predictions"]],
            "usage": answer["usage"],
            "prompts": sent[:n],
            "calibration_prompts": sent[n:],
        }

    def job(self, label: str, path: str, body: dict[str, Any]) -> None:
        before = len(self.scorer.calls)
        response = self.client.post(path, json=body)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        for _ in range(1000):
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.01)
        assert job["status"] == "succeeded", job
        result = dict(job["result"])
        result.pop("created_at", None)
        result.pop("fit_id", None)  # a time, as created_at
        result.pop("elapsed_s", None)
        if "cost" in result:  # tokens are fixed; seconds are not
            result["cost"] = {k: v for k, v in result["cost"].items() if k != "seconds"}
        if "metadata" in result:
            result["metadata"] = {k: v for k, v in result["metadata"].items() if k != "scikit_learn"}
        self.records[label] = {"result": result, "engine_prompts": len(self.scorer.calls) - before}


def record_everything(tmp_path: Path) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path, max_inputs=16, max_input_chars=2000, auto_fit=False)
    runtime = Runtime(scorer=DemoReadingScorer(max_model_len=100, prefix_cache=True), embedder=FakeEmbedder())
    with TestClient(create_app(settings, runtime=runtime)) as client:
        rec = Recorder(client)
        for task, examples in ((SENTIMENT, sentiment_examples()), (ENTAILMENT, entailment_examples())):
            assert client.post("/v1/tasks", json=task).status_code == 201
            added = client.post(f"/v1/tasks/{task['name']}/examples", json={"examples": examples})
            assert added.status_code == 200, added.text
        assert client.post("/v1/tasks", json={**SENTIMENT, "name": "golden-empty"}).status_code == 201

        sentiment = SENTIMENT["name"]
        for label, body in _prediction_grid() + _variants():
            rec.predict(sentiment, label, body)
        for calibration in ("none", "contextual", "domain"):
            rec.predict("golden-empty", f"empty_pool/{calibration}",
                        {"inputs": SENTIMENT_INPUTS[:2], "calibration": calibration})
        rec.job("annotation/votek_two_stage", f"/v1/tasks/{sentiment}/annotation-plan",
                {"budget": 5, "method": "votek_two_stage", "confidence_demos": 3})
        rec.job("training/sentiment", f"/v1/tasks/{sentiment}/controller",
                {"candidate_k": [0, 1, 2, 4], "train_size": 30, "selection": "knn", "seed": 3})
        for label, body in _after_training():
            rec.predict(sentiment, label, body)
        # What the fit chose may be one count; a fit whose cascade escalates keeps the cascade's path recorded.
        _serve_cascade(client, sentiment, Cascade((0, 2), (0.3,)))
        rec.predict(sentiment, "cascade/knn/auto/auto", {"inputs": SENTIMENT_INPUTS})
        rec.predict(sentiment, "cascade/knn/auto_budget/none",
                    {"inputs": SENTIMENT_INPUTS, "calibration": "none", "budget": {"max_prompt_tokens": 400}})
        for label, body in _entailment_grid():
            rec.predict(ENTAILMENT["name"], label, body)
        rec.job("training/entailment", f"/v1/tasks/{ENTAILMENT['name']}/controller",
                {"candidate_k": [0, 1, 2], "train_size": 20, "selection": "random", "seed": 1})
        # The fit chose its embedding head (no prompt); then the head with a threshold that sends one input on
        # (untempered: on these few examples, every one answered right, its fitted temperature makes it sure
        # of both inputs).
        rec.predict(ENTAILMENT["name"], "trained/head/default", {"inputs": _entailment_inputs()})
        _serve_cascade(client, ENTAILMENT["name"], Cascade((HEAD_STAGE, 1), (0.6,)), head_temperature=1.0)
        rec.predict(ENTAILMENT["name"], "trained/head_then_k1/default", {"inputs": _entailment_inputs()})
        # The count it chose before it had a head keeps the calibration paths of a fitted shared set covered.
        _serve_cascade(client, ENTAILMENT["name"], Cascade((0,), ()))
        for label, body in _entailment_grid():
            rec.predict(ENTAILMENT["name"], f"trained/{label}", body)
        openapi = client.get("/openapi.json").json()
    return {"records": rec.records, "openapi": openapi}


def _differences(expected: Any, actual: Any, where: str = "") -> list[str]:
    """Where two JSON values differ: floats within TOLERANCE, everything else exactly."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{where}.{key}: missing" for key in expected if key not in actual]
        out += [f"{where}.{key}: unexpected" for key in actual if key not in expected]
        for key in expected:
            if key in actual:
                out += _differences(expected[key], actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} items expected, {len(actual)} found"]
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for d in _differences(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, (int, float)) and isinstance(actual, (int, float)) \
                and math.isclose(expected, actual, rel_tol=0.0, abs_tol=TOLERANCE):
            return []
        return [f"{where}: {expected!r} expected, {actual!r} found"]
    return [] if expected == actual else [f"{where}: {expected!r} expected, {actual!r} found"]


def test_predictions_prompts_and_schema_match_the_golden_files(tmp_path):
    found = record_everything(tmp_path)
    files = {"predictions": GOLDEN / "predictions.json", "openapi": GOLDEN / "openapi.json"}
    if os.environ.get("ICL_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        files["predictions"].write_text(json.dumps(found["records"], indent=1, sort_keys=True) + "\n")
        files["openapi"].write_text(json.dumps(found["openapi"], indent=1, sort_keys=True) + "\n")
    expected_records = json.loads(files["predictions"].read_text())
    expected_openapi = json.loads(files["openapi"].read_text())
    problems = _differences(expected_records, found["records"], "records")
    problems += _differences(expected_openapi, found["openapi"], "openapi")
    assert not problems, "\n".join(problems[:40]) + (f"\n... {len(problems) - 40} more" if len(problems) > 40 else "")


def _serve_cascade(client: TestClient, task: str, cascade: Cascade, head_temperature: float | None = None) -> None:
    """Store the task's fit again with ``cascade`` in place of the one it chose (and its embedding head at
    ``head_temperature``, where given)."""
    store = client.app.state.icl.store
    record = store.get_task(task)
    stored = store.load_fit(record.id)
    fit = pickle.loads(stored.blob)
    if head_temperature is not None:
        fit = replace(fit, head=replace(fit.head, temperature=head_temperature))
    store.save_fit(record.id, pickle.dumps(replace(fit, cascade=cascade)), stored.summary)


def test_the_grid_covers_what_it_claims():
    """The golden files must exercise calibration prompts, cache hits, trimmed prompts and the controller;
    a grid that quietly stopped doing so would still match itself."""
    records = json.loads((GOLDEN / "predictions.json").read_text())
    ok = {label: r for label, r in records.items() if "predictions" in r}
    assert all(ok[f"{s}/fixed/{c}"]["calibration_prompts"] for s in ("knn", "random", "diverse")
               for c in ("contextual", "domain"))
    assert not ok["knn/fixed/auto"]["calibration_prompts"] and not ok["knn/fixed/batch"]["calibration_prompts"]
    assert {p["calibration"] for p in ok["knn/fixed/batch"]["predictions"]} == {"batch"}
    fitted = {p["calibration"] for label, r in ok.items() if label.startswith("trained/knn/auto/auto")
              for p in r["predictions"]}
    assert fitted <= {"none", "batch:fitted", "affine"}  # a fitted batch is reported as "batch:fitted"
    assert ok["cache/random/first"]["calibration_prompts"] and not ok["cache/random/again"]["calibration_prompts"]
    assert ok["cache/random/again"]["predictions"] == ok["cache/random/first"]["predictions"]
    assert any(p["k"] < 8 for p in ok["window/knn/8"]["predictions"])
    assert any(p["k"] < 3 for p in ok["knn/budget/none"]["predictions"])
    # The fitted cascade answers some inputs at its first stage and sends others on.
    assert ok["trained/knn/auto/auto"]["demos_policy"] == "cascade"
    cascade = ok["cascade/knn/auto/auto"]
    assert cascade["demos_policy"] == "cascade"
    assert {len(p["stages"]) for p in cascade["predictions"]} == {1, 2}, "the cascade should escalate some inputs"
    assert {p["k"] for p in ok["trained/fixed_ignores_controller"]["predictions"]} == {2}
    assert records["budget/too_small"]["code"] == "budget_too_small"
    assert records["trained/auto/budget_too_small"]["code"] == "budget_too_small"
    assert records["annotation/votek_two_stage"]["result"]["ids"]
    # The embedding head answers without a prompt, alone or before the model.
    assert {p["decision"] for p in ok["trained/head/default"]["predictions"]} == {"head"}
    assert not ok["trained/head/default"]["prompts"] and ok["trained/head/default"]["usage"]["prompt_tokens"] == 0
    assert {p["decision"] for p in ok["trained/head_then_k1/default"]["predictions"]} == {"head", "tokens"}
