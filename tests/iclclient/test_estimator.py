"""ICLClassifier, the scikit-learn estimator, against the app on the fake engine (through ``use_http``)."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils import get_tags

import iclclient
from iclclient import APIError, Client, ICLClassifier, JobFailed
from iclclient import estimator as estimator_module
from iclclient.estimator import DEFAULT_TEMPLATE, use_http
from service.app import create_app
from service.config import Settings
from service.state import Runtime
from tests.conftest import REPO, load_split
from tests.fakes import FakeEmbedder, FakeScorer

KEY = "secret"


@contextmanager
def _service(tmp_path, scorer=None, **settings):
    """The app on the fake engine as every ICLClassifier's transport; a Client on it to look at the task."""
    settings = Settings(data_dir=tmp_path, api_keys=[KEY], **{"auto_fit": True, "auto_fit_min_labeled": 40,
                                                              **settings})
    runtime = Runtime(scorer=scorer or FakeScorer(), embedder=FakeEmbedder())
    with TestClient(create_app(settings, runtime=runtime)) as http, use_http(http):
        yield Client(api_key=KEY, http=http)


def _sst2(split, n):
    rows = load_split("sst2", split, n)
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _clf(**params):
    return ICLClassifier(task="sst2", api_key=KEY, **params)


def test_parameters_round_trip_and_clone_without_a_service():
    clf = ICLClassifier("sst2", url="http://icl.example:8000", api_key=KEY, demos=2, selection="random",
                        verbalizers={"negative": "bad", "positive": "good"}, batch_size=8)
    params = clf.get_params()
    assert params == {"task": "sst2", "url": "http://icl.example:8000", "api_key": KEY, "template": DEFAULT_TEMPLATE,
                      "instruction": None, "verbalizers": {"negative": "bad", "positive": "good"}, "demos": 2,
                      "selection": "random", "calibration": None, "batch_size": 8, "wait_fit": True,
                      "fit_timeout_s": 3600.0, "timeout": 300.0}
    assert clone(clf).get_params() == params
    tags = get_tags(clf)
    assert tags.input_tags.string and not tags.input_tags.two_d_array and tags.estimator_type == "classifier"
    assert pickle.loads(pickle.dumps(clf)).get_params() == params
    assert clf.set_params(batch_size=16, calibration="none") is clf
    assert (clf.batch_size, clf.calibration) == (16, "none")
    with pytest.raises(ValueError, match="Invalid parameter"):
        clf.set_params(bogus=1)
    # Not fitted: refused before any request (no service answers at that URL).
    for method in (clf.predict, clf.predict_proba):
        with pytest.raises(NotFittedError):
            method(["a film"])
    with pytest.raises(NotFittedError):
        clf.score(["a film"], ["positive"])


def test_import_iclclient_does_not_import_sklearn_and_a_missing_extra_is_named():
    script = ("import sys\n"
              "import iclclient\n"
              "assert 'sklearn' not in sys.modules and 'iclclient.estimator' not in sys.modules\n"
              "sys.modules['sklearn'] = None  # as if the extra were not installed\n"
              "try:\n"
              "    from iclclient import ICLClassifier\n"
              "except ImportError as exc:\n"
              "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'icl-service[sklearn]'" in done.stdout
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        iclclient.Nope  # noqa: B018


def test_fit_waits_for_the_automatic_fit_then_predicts_in_classes_order(tmp_path):
    X, y = _sst2("train", 60)
    X_test, y_test = _sst2("test", 40)
    with _service(tmp_path) as client:
        clf = _clf(batch_size=7)  # 40 inputs: 6 requests, the last one short
        assert clf.fit(X, y) is clf
        assert list(clf.classes_) == ["negative", "positive"] and isinstance(clf.classes_, np.ndarray)
        task = client.get_task("sst2")
        assert task["labels"] == ["negative", "positive"] and task["template"] == DEFAULT_TEMPLATE
        assert (task["n_examples"], task["n_labeled"]) == (60, 60)
        assert task["fit"]["state"] == "fitted" and clf.fit_state_ == "fitted"
        assert clf.fit_id_ is not None and clf.fit_id_ == task["fit"]["fit_id"]

        predicted = clf.predict(X_test)
        proba = clf.predict_proba(X_test)
        assert predicted.shape == (40,) and set(predicted) <= {"negative", "positive"}
        assert proba.shape == (40, 2) and np.allclose(proba.sum(axis=1), 1.0)
        assert list(clf.classes_[proba.argmax(axis=1)]) == list(predicted)
        # Columns in classes_ order: the service's own answer for the same inputs, label by label.
        answer = client.predict("sst2", X_test)["predictions"]
        assert [p["label"] for p in answer] == list(predicted)
        assert np.allclose(proba, [[p["probs"]["negative"], p["probs"]["positive"]] for p in answer])
        assert {p["fit_id"] for p in answer} == {clf.fit_id_}
        assert clf.score(X_test, y_test) == pytest.approx(np.mean(predicted == np.array(y_test)))

        # A fitted estimator: clone gives the parameters without the fit; the original stays fitted.
        copy = clone(clf)
        assert copy.get_params() == clf.get_params() and not hasattr(copy, "classes_")
        with pytest.raises(NotFittedError):
            copy.predict(X_test)
        restored = pickle.loads(pickle.dumps(clf))
        assert list(restored.predict(X_test)) == list(predicted)


def test_fit_again_replaces_the_examples_and_the_labels(tmp_path):
    X, y = _sst2("train", 80)
    with _service(tmp_path) as client:
        clf = _clf().fit(X, y)
        assert client.get_task("sst2")["n_examples"] == 80
        # Second fit: fewer examples, labels of another type; the task holds only these.
        numbers = [1 if label == "positive" else 0 for label in y[:50]]
        clf.fit(X[:50], numbers)
        task = client.get_task("sst2")
        assert (task["n_examples"], task["n_labeled"], task["labels"]) == (50, 50, ["0", "1"])
        assert client.list_examples("sst2", limit=1000)["total"] == 50
        assert list(clf.classes_) == [0, 1] and clf.classes_.dtype.kind == "i"
        predicted = clf.predict(X[50:60])
        assert set(predicted.tolist()) <= {0, 1} and predicted.dtype.kind == "i"  # y's type, so score compares
        assert 0.0 <= clf.score(X[50:60], numbers[:10]) <= 1.0
        assert (clf.fit_state_, clf.fit_id_) == (task["fit"]["state"], task["fit"]["fit_id"])


def test_the_service_fits_the_task_again_after_a_second_fit(tmp_path):
    """On SQLite the task created again gets the deleted task's id: the service must still fit it by itself."""
    X, y = _sst2("train", 80)
    with _service(tmp_path) as client:
        clf = _clf().fit(X, y)
        first = clf.fit_id_
        clf.fit(X[:50], y[:50])
        task = client.get_task("sst2")
        assert task["fit"]["state"] == "fitted" and clf.fit_id_ == task["fit"]["fit_id"] not in (None, first)


def test_fit_returns_at_once_when_the_service_fits_nothing(tmp_path):
    X, y = _sst2("train", 60)
    with _service(tmp_path / "off", auto_fit=False) as client:
        clf = _clf().fit(X, y)
        assert (clf.fit_state_, clf.fit_id_) == ("none", None)
        assert client.get_task("sst2")["fit"]["state"] == "none"
        assert len(clf.predict(X[:5])) == 5  # unfitted defaults serve
    with _service(tmp_path / "small") as client:
        clf = _clf().fit(X[:20], y[:20])  # under the 40 labeled examples a fit needs
        assert (clf.fit_state_, clf.fit_id_) == ("none", None)
        assert client.get_task("sst2")["n_examples"] == 20


def test_without_wait_fit_fit_returns_while_the_fit_runs_and_a_refit_replaces_it(tmp_path):
    X, y = _sst2("train", 60)
    with _service(tmp_path) as client:
        clf = _clf(wait_fit=False).fit(X, y)
        assert clf.fit_state_ == "running" and clf.fit_id_ is None
        running = client.get_task("sst2")["fit"]["job_id"]
        # Fitting again while that fit runs: deleting the task stops it, so that it neither holds back the new
        # task's fit nor stores its fit of the old pool for the new task.
        clf.set_params(wait_fit=True).fit(X[:45], y[:45])
        stopped = client.get_job(running)
        assert stopped["status"] == "failed" and stopped["error"]["type"] == "task_deleted"
        task = client.get_task("sst2")
        assert task["n_examples"] == 45 and task["fit"]["state"] != "running"
        assert task["controller"] is None or task["controller"]["metadata"]["n_labeled"] == 45


def test_a_fit_that_outlasts_fit_timeout_s_warns_and_one_that_fails_raises(tmp_path):
    X, y = _sst2("train", 60)
    with _service(tmp_path / "slow", scorer=FakeScorer(tokens_per_s=2_000)):
        with pytest.warns(ConvergenceWarning, match="had not finished"):
            clf = _clf(fit_timeout_s=0.2).fit(X, y)
        assert clf.fit_state_ == "running" and list(clf.classes_) == ["negative", "positive"]

    async def broken(prompts, continuations, priority=0):
        await asyncio.sleep(0.3)  # fails while fit watches it, not before fit looks
        raise RuntimeError("engine went away")

    scorer = FakeScorer()
    with _service(tmp_path / "broken", scorer=scorer) as client:
        scorer.score = broken  # the upload embeds without the engine; the fit needs it
        clf = _clf()
        with pytest.raises(JobFailed, match="engine went away"):
            clf.fit(X, y)
        assert not hasattr(clf, "classes_")
        assert client.get_task("sst2")["n_examples"] == 60


def test_uploads_and_predictions_go_in_batches_within_the_service_limits(tmp_path, monkeypatch):
    X, y = _sst2("train", 60)
    monkeypatch.setattr(estimator_module, "UPLOAD_BATCH", 25)
    with _service(tmp_path, auto_fit=False, max_examples_per_request=25, max_inputs=8) as client:
        clf = _clf(batch_size=8).fit(X, y)  # 3 uploads of at most 25
        assert client.get_task("sst2")["n_examples"] == 60
        assert len(clf.predict(X[:20])) == 20 and clf.predict_proba(X[:20]).shape == (20, 2)
        with pytest.raises(APIError, match="too_many_inputs"):
            clf.set_params(batch_size=9).predict(X[:20])
    monkeypatch.setattr(estimator_module, "UPLOAD_BYTES", 2_000)  # long examples: fewer per upload
    with _service(tmp_path / "bytes", auto_fit=False, max_body_bytes=2_500) as client:
        _clf().fit(X, y)  # 25 examples would be a body over 2,500 bytes: 413
        assert client.get_task("sst2")["n_examples"] == 60


def test_multi_field_templates_take_dicts(tmp_path):
    rows = load_split("rte", "train", 50)
    X = [{"premise": r["premise"], "hypothesis": r["hypothesis"]} for r in rows]
    y = [r["label"] for r in rows]
    template = "Premise: {premise}\nHypothesis: {hypothesis}\nLabel: {label}"
    with _service(tmp_path, auto_fit=False) as client:
        clf = ICLClassifier("rte", api_key=KEY, template=template, demos=1, calibration="none").fit(X[:40], y[:40])
        assert client.get_task("rte")["template"] == template
        assert client.list_examples("rte", limit=1)["examples"][0]["input"] == X[0]
        assert list(clf.classes_) == ["entailment", "not_entailment"]
        assert set(clf.predict(X[40:])) <= set(clf.classes_)
        # A DataFrame's rows (not its column names, which iterating it gives).
        assert list(clf.predict(_Frame(X[40:]))) == list(clf.predict(X[40:]))


class _Frame:
    """What the estimator reads of a pandas DataFrame (pandas is not installed here)."""

    def __init__(self, rows):
        self.rows, self.columns = rows, list(rows[0])

    def __iter__(self):
        return iter(self.columns)

    def to_dict(self, orient):
        assert orient == "records"
        return self.rows


def test_bad_input_is_refused_before_the_task_is_touched(tmp_path):
    X, y = _sst2("train", 60)
    with _service(tmp_path, auto_fit=False) as client:
        clf = _clf().fit(X, y)
        for bad_X, bad_y, message in [
            (X[:10], ["positive"] * 10, "at least 2 distinct labels"),
            (X[:10], y[:9], "inconsistent numbers of samples"),
            ("one text", ["positive"], "not one input"),
            ([1.5, 2.5], ["negative", "positive"], "a text or a dict"),
            (X[:3], [0.5, 1.5, 2.25], "Unknown label type"),
        ]:
            with pytest.raises(ValueError, match=message):
                _clf().fit(bad_X, bad_y)
        assert client.get_task("sst2")["n_examples"] == 60  # still the first fit's pool
        assert len(clf.predict(X[:2])) == 2
        # The task made again behind the estimator's back, with other labels: said, not mislabeled.
        client.delete_task("sst2")
        client.create_task("sst2", ["bad", "good"], DEFAULT_TEMPLATE)
        client.add_examples("sst2", [{"input": "a bad film", "label": "bad"}, {"input": "a good one", "label": "good"}])
        for method in (clf.predict, clf.predict_proba):
            with pytest.raises(ValueError, match="was the task changed"):
                method(X[:2])
