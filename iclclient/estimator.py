"""``ICLClassifier``: a task of the service as a scikit-learn classifier (needs ``icl-service[sklearn]``).

    from iclclient import ICLClassifier
    clf = ICLClassifier(task="sst2", url="http://127.0.0.1:8000").fit(X_train, y_train)
    print(clf.score(X_test, y_test))

``fit`` makes the task's demonstration pool ``X`` and ``y`` (it deletes the task and creates it again) and waits
for the fit the service then starts by itself; ``predict`` and ``predict_proba`` classify through the task.
The estimator holds only its parameters and what ``fit`` learned, so ``clone`` and pickle work: every call
opens its own ``Client``. ``use_http`` sends those clients through a given httpx client instead (tests pass the
app's test client).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

try:
    import numpy as np
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_consistent_length, check_is_fitted
except ImportError as exc:  # the bare client does not install scikit-learn
    raise ImportError("iclclient.ICLClassifier needs scikit-learn and numpy, the client's `sklearn` extra: "
                      "pip install 'icl-service[sklearn]'") from exc

import httpx

from iclclient.client import APIError, Client, ClientError
from iclclient.types import ExampleIn, InputValue, Prediction, Task

__all__ = ["DEFAULT_TEMPLATE", "ICLClassifier", "use_http"]

DEFAULT_TEMPLATE = "Input: {text}\nLabel: {label}"
# Examples per upload, and their JSON's bytes at most: well within the service's default limits (10,000
# examples, ICL_MAX_EXAMPLES_PER_REQUEST; 32 MiB a body, ICL_MAX_BODY_BYTES), whatever the examples' lengths.
UPLOAD_BATCH = 1_000
UPLOAD_BYTES = 8 * 2**20
POLL_S = 0.25

_http: httpx.Client | None = None


@contextmanager
def use_http(http: httpx.Client) -> Iterator[None]:
    """Within the block, every ``ICLClassifier`` talks through ``http`` (e.g. FastAPI's ``TestClient``, or an
    httpx client with its own TLS or proxy settings). Kept out of the estimator's parameters, so that
    ``get_params``, ``clone`` and pickle never see it."""
    global _http
    previous, _http = _http, http
    try:
        yield
    finally:
        _http = previous


class ICLClassifier(ClassifierMixin, BaseEstimator):
    """The service's task ``task`` as a classifier.

    ``url``, ``api_key``, ``timeout``: where and how to reach the service (defaults: ``ICL_URL``,
    ``ICL_API_KEY``, as ``Client``). ``template``, ``instruction``, ``verbalizers`` (label -> the words the
    model should say): the task ``fit`` creates. ``demos``, ``selection``, ``calibration``: sent with every
    predict (None: the service's defaults, i.e. the fitted cascade and calibration). ``batch_size``: inputs per
    predict request (the service takes at most 256 by default). ``wait_fit``: whether ``fit`` waits for the
    service's automatic fit, at most ``fit_timeout_s`` seconds (None: as long as it takes).

    Fitted attributes: ``classes_`` (the sorted distinct labels of ``y``, in ``y``'s type; the task's labels
    are their strings), ``fit_id_`` (the task's fit once ``fit`` returns, or None) and ``fit_state_`` (its
    state then: "fitted", "running" when not waited for, "none" when the service fits nothing).
    """

    def __init__(self, task: str, url: str | None = None, api_key: str | None = None,
                 template: str = DEFAULT_TEMPLATE, instruction: str | None = None,
                 verbalizers: Mapping[Any, str] | None = None, demos: int | str | None = None,
                 selection: str | None = None, calibration: str | None = None, batch_size: int = 32,
                 wait_fit: bool = True, fit_timeout_s: float | None = 3600.0, timeout: float = 300.0) -> None:
        # scikit-learn's convention: store the parameters as given, check them in fit.
        self.task = task
        self.url = url
        self.api_key = api_key
        self.template = template
        self.instruction = instruction
        self.verbalizers = verbalizers
        self.demos = demos
        self.selection = selection
        self.calibration = calibration
        self.batch_size = batch_size
        self.wait_fit = wait_fit
        self.fit_timeout_s = fit_timeout_s
        self.timeout = timeout

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True  # texts, like a vectorizer's input
        return tags

    # --- fit --------------------------------------------------------------------------------------------

    def fit(self, X: Sequence[InputValue], y: Sequence[Any]) -> ICLClassifier:
        """Make the task's pool exactly ``X`` labeled ``y``: delete the task, create it again with the sorted
        distinct labels of ``y``, upload the examples, and (``wait_fit``) wait for the fit the service starts
        by itself (from 40 labeled examples by default). ``X``: texts, or dicts of the template's fields (a
        DataFrame's rows too). A failed fit raises ``JobFailed`` (one that failed before ``fit`` looked leaves
        ``fit_state_`` "none"); one still running after ``fit_timeout_s`` warns, and predictions use the
        unfitted defaults until it ends."""
        inputs = _inputs(X)
        labels = np.asarray(y)
        if labels.ndim != 1:
            raise ValueError(f"y must be one label per input, not an array of shape {labels.shape}")
        check_consistent_length(inputs, labels)
        check_classification_targets(labels)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError(f"y must have at least 2 distinct labels, not {len(classes)}")
        names = _label_names(classes)
        with self._client() as client:
            _recreate(client, self.task, names, self.template, self.instruction, self._verbalizers())
            _upload(client, self.task, [{"input": x, "label": names[i]}
                                        for x, i in zip(inputs, np.searchsorted(classes, labels), strict=True)])
            fit = self._await_fit(client)
        self.classes_ = classes
        self.fit_id_: str | None = fit.get("fit_id")
        self.fit_state_: str = fit["state"]
        return self

    def _verbalizers(self) -> dict[str, str] | None:
        # Keyed by the task's labels, the classes' strings; the service checks them against the labels.
        if self.verbalizers is None:
            return None
        return {str(label): words for label, words in self.verbalizers.items()}

    def _await_fit(self, client: Client) -> dict[str, Any]:
        """The task's fit state once the fits the upload started have ended (a fit that ends may start a
        refit, for examples uploaded while it ran); at once without ``wait_fit`` or when none started."""
        fit = dict(client.get_task(self.task)["fit"])
        deadline = _deadline(self.fit_timeout_s)
        while self.wait_fit and fit["state"] == "running":
            if not _wait(client, fit["job_id"], deadline):
                warnings.warn(f"the fit of task '{self.task}' had not finished after {self.fit_timeout_s} s; "
                              "predictions use the unfitted defaults until it does", ConvergenceWarning,
                              stacklevel=3)
                break
            fit = dict(client.get_task(self.task)["fit"])
        return fit

    # --- predict ----------------------------------------------------------------------------------------

    def predict(self, X: Sequence[InputValue]) -> np.ndarray:
        """The label of each input, one of ``classes_``."""
        check_is_fitted(self)
        names = _label_names(self.classes_)
        index = {name: i for i, name in enumerate(names)}
        rows = []
        for p in self._predictions(X):
            if p["label"] not in index:
                raise _task_changed(p["label"], names)
            rows.append(index[p["label"]])
        return self.classes_[rows]

    def predict_proba(self, X: Sequence[InputValue]) -> np.ndarray:
        """The service's calibrated probabilities: a row per input, a column per class of ``classes_``."""
        check_is_fitted(self)
        names = _label_names(self.classes_)
        rows = []
        for p in self._predictions(X):
            if set(p["probs"]) != set(names):
                raise _task_changed(p["label"], names)
            rows.append([p["probs"][name] for name in names])
        return np.array(rows, dtype=float)

    def _predictions(self, X: Sequence[InputValue]) -> list[Prediction]:
        inputs = _inputs(X)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        out: list[Prediction] = []
        with self._client() as client:
            for start in range(0, len(inputs), self.batch_size):
                answer = client.predict(self.task, inputs[start:start + self.batch_size], demos=self.demos,
                                        selection=self.selection, calibration=self.calibration)
                out.extend(answer["predictions"])
        return out

    def _client(self) -> Client:
        return Client(self.url, self.api_key, timeout=self.timeout, http=_http)


def _inputs(X: Any) -> list[InputValue]:
    """Texts, or dicts of fields, as plain JSON values (numpy strings, pandas Series and DataFrames too)."""
    if isinstance(X, str | bytes | Mapping):
        raise ValueError("X must be a sequence of inputs (texts, or dicts of the template's fields), not one input")
    if hasattr(X, "columns") and hasattr(X, "to_dict"):  # a DataFrame: a row per input, a column per field
        X = X.to_dict("records")
    inputs = [_input(x) for x in X]
    if not inputs:
        raise ValueError("X is empty")
    return inputs


def _input(x: Any) -> InputValue:
    if isinstance(x, str):
        return str(x)
    if isinstance(x, Mapping):
        return {str(field): str(value) for field, value in x.items()}
    raise ValueError(f"an input must be a text or a dict of the template's fields, not {type(x).__name__}")


def _label_names(classes: np.ndarray) -> list[str]:
    """The task's labels: the classes' strings, which must stay distinct."""
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"the labels {list(classes)} are not distinct as strings")
    return names


def _task_changed(label: str, names: list[str]) -> ValueError:
    return ValueError(f"the service answered label {label!r} over other labels than the classes fitted ({names}); "
                      "was the task changed since? fit again")


def _recreate(client: Client, task: str, labels: list[str], template: str, instruction: str | None,
              verbalizers: dict[str, str] | None) -> Task:
    """The task anew, empty: the API has no call that replaces every example. Deleting it stops a fit of the
    old task that still runs."""
    try:
        client.delete_task(task)
    except APIError as exc:
        if exc.status != 404:
            raise
    return client.create_task(task, labels, template, verbalizers=verbalizers, instruction=instruction)


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s


def _wait(client: Client, job_id: str, deadline: float | None) -> bool:
    """Wait for the job until ``deadline``: whether it ended (``JobFailed`` if it failed)."""
    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    try:
        client.wait_for_job(job_id, poll_s=POLL_S, timeout_s=left)
    except ClientError as exc:
        if type(exc) is not ClientError:  # wait_for_job's timeout is a plain ClientError; the rest go on
            raise
        return False
    return True


def _upload(client: Client, task: str, examples: list[ExampleIn]) -> None:
    batch: list[ExampleIn] = []
    size = 0
    for example in examples:
        grows = len(json.dumps(example).encode()) + 2
        if batch and (len(batch) == UPLOAD_BATCH or size + grows > UPLOAD_BYTES):
            client.add_examples(task, batch)
            batch, size = [], 0
        batch.append(example)
        size += grows
    if batch:
        client.add_examples(task, batch)
