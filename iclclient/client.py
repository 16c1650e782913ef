"""A typed client for the service's HTTP API, on httpx. It needs neither the engine nor the server's packages.

    from iclclient import Client
    client = Client("http://127.0.0.1:8000")          # or ICL_URL / ICL_API_KEY from the environment
    client.create_task("movie", ["negative", "positive"], "Input: {text}\\nLabel: {label}")
    client.add_examples("movie", [{"input": "a gorgeous film", "label": "positive"}])
    client.predict("movie", ["a witty film"])["predictions"][0]["label"]

Options left as None are not sent, so the service's defaults apply. Every call raises ``APIError`` for an
error answer (its status, code, message and parameter from the service's error envelope) and
``ServiceUnreachable`` when no service answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import httpx

from iclclient.types import (
    AnnotationPlan,
    BatchResultItem,
    BatchResults,
    Example,
    ExampleIn,
    ExampleList,
    ExamplesAdded,
    InputValue,
    Job,
    JobKind,
    JobList,
    JobStatus,
    PredictResponse,
    Task,
)

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """What went wrong talking to the service."""


class ServiceUnreachable(ClientError):
    """No service answered at the URL (not started, wrong URL or port, or a network problem)."""


class APIError(ClientError):
    """The service answered with an error: its status and its error envelope's fields."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type: str | None = None, retry_after: float | None = None) -> None:  # noqa: A002
        super().__init__(f"{status} {code or 'error'}: {message}")
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type
        self.retry_after = retry_after


class ServiceTimeout(ClientError):
    """The service did not answer within the client's timeout."""


class JobFailed(ClientError):
    def __init__(self, job: Job) -> None:
        error = job.get("error") or {}
        super().__init__(f"job {job['job_id']} failed: {error.get('message', 'no reason given')}")
        self.job = job


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class Client:
    """The service at ``url`` (default ``ICL_URL``, else http://127.0.0.1:8000), with ``api_key`` (default
    ``ICL_API_KEY``) as its bearer key, and ``admin_key`` (default ``ICL_ADMIN_KEY``) for /v1/admin/*. ``http``:
    an httpx client to send through instead (tests pass the app's own test client). A 429 or 503 with ``Retry-
    After`` (busy, or the engine still starting) is retried up to ``retries`` times after the time it asks for."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 300.0,
                 http: httpx.Client | None = None, retries: int = 3, admin_key: str | None = None) -> None:
        self.url = (url or os.environ.get("ICL_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("ICL_API_KEY")
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        admin = admin_key if admin_key is not None else os.environ.get("ICL_ADMIN_KEY")
        self._admin_headers = {"Authorization": f"Bearer {admin}"} if admin else {}
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(base_url=self.url, timeout=timeout)
        self.retries = retries

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, headers=self._headers if headers is None else headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServiceTimeout(f"{self.url} did not answer {method} {path} in time ({type(exc).__name__}); "
                                 "raise the client's timeout or send less at once") from exc
        except httpx.TransportError as exc:
            raise ServiceUnreachable(f"no service answers at {self.url} ({type(exc).__name__}: {exc}); start it "
                                     "with `make run` or `iclserve serve`, or point ICL_URL at it") from exc

    def _request(self, method: str, path: str, retry: bool = True, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = self._send(method, path, **kwargs)
            if response.status_code < 400:
                return response
            error = self._error(response)
            if not retry or error.status not in (429, 503) or error.retry_after is None or attempt == self.retries:
                raise error
            time.sleep(error.retry_after)
        raise AssertionError("unreachable")

    @staticmethod
    def _error(response: httpx.Response) -> APIError:
        retry = response.headers.get("retry-after")
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return APIError(response.status_code, response.text[:500] or response.reason_phrase,
                            retry_after=float(retry) if retry else None)
        return APIError(response.status_code, error.get("message", ""), error.get("code"), error.get("param"),
                        error.get("type"), float(retry) if retry else None)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # --- tasks ------------------------------------------------------------------------------------------

    def create_task(self, name: str, labels: Sequence[str], template: str,
                    verbalizers: dict[str, str] | None = None, instruction: str | None = None,
                    separator: str | None = None, default_k: int | None = None) -> Task:
        body = _without_none({"name": name, "labels": list(labels), "template": template, "verbalizers": verbalizers,
                              "instruction": instruction, "separator": separator, "default_k": default_k})
        return self._json("POST", "/v1/tasks", json=body)

    def list_tasks(self) -> list[Task]:
        return self._json("GET", "/v1/tasks")["tasks"]

    def get_task(self, name: str) -> Task:
        return self._json("GET", f"/v1/tasks/{name}")

    def delete_task(self, name: str) -> None:
        self._request("DELETE", f"/v1/tasks/{name}")

    # --- examples ---------------------------------------------------------------------------------------

    def add_examples(self, name: str, examples: Iterable[ExampleIn]) -> ExamplesAdded:
        return self._json("POST", f"/v1/tasks/{name}/examples", json={"examples": list(examples)})

    def list_examples(self, name: str, labeled: bool | None = None, limit: int = 100, offset: int = 0) -> ExampleList:
        params = _without_none({"labeled": None if labeled is None else str(labeled).lower(), "limit": limit,
                                "offset": offset})
        return self._json("GET", f"/v1/tasks/{name}/examples", params=params)

    def label_example(self, name: str, example_id: str, label: str | None) -> Example:
        return self._json("PATCH", f"/v1/tasks/{name}/examples/{example_id}", json={"label": label})

    # --- predict ----------------------------------------------------------------------------------------

    def predict(self, name: str, inputs: Sequence[InputValue], demos: int | Literal["auto"] | None = None,
                selection: Literal["knn", "random", "diverse"] | None = None, max_prompt_tokens: int | None = None,
                calibration: Literal["auto", "batch", "domain", "contextual", "none"] | None = None,
                domain_calibration: str | dict[str, Any] | None = None, include_prompt: bool | None = None,
                seed: int | None = None,
                decision: Literal["auto", "tokens", "head", "hidden"] | None = None) -> PredictResponse:
        body = _without_none({"inputs": list(inputs), "demos": demos, "selection": selection,
                              "calibration": calibration, "domain_calibration": domain_calibration,
                              "include_prompt": include_prompt, "seed": seed, "decision": decision})
        if max_prompt_tokens is not None:
            body["budget"] = {"max_prompt_tokens": max_prompt_tokens}
        return self._json("POST", f"/v1/tasks/{name}/predict", json=body)

    # --- batch jobs -------------------------------------------------------------------------------------

    def create_batch(self, name: str, inputs: Sequence[InputValue], ids: Sequence[str | None] | None = None,
                     demos: int | Literal["auto"] | None = None, selection: str | None = None,
                     max_prompt_tokens: int | None = None, calibration: str | None = None,
                     include_prompt: bool | None = None, seed: int | None = None,
                     decision: Literal["auto", "tokens", "head", "hidden"] | None = None) -> str:
        """Start a batch job over up to 100,000 inputs; its id (follow it with ``wait_for_job``, read it with
        ``batch_results``)."""
        body = _without_none({"inputs": list(inputs), "ids": list(ids) if ids is not None else None,
                              "demos": demos, "selection": selection, "calibration": calibration,
                              "include_prompt": include_prompt, "seed": seed, "decision": decision})
        if max_prompt_tokens is not None:
            body["budget"] = {"max_prompt_tokens": max_prompt_tokens}
        return self._json("POST", f"/v1/tasks/{name}/batches", json=body)["job_id"]

    def batch_results(self, job_id: str, offset: int = 0, limit: int = 100) -> BatchResults:
        return self._json("GET", f"/v1/jobs/{job_id}/results", params={"offset": offset, "limit": limit})

    def iter_batch_results(self, job_id: str, page: int = 1000) -> Iterator[BatchResultItem]:
        """Every result of a batch job, in input order, a page at a time."""
        offset = 0
        while results := self.batch_results(job_id, offset, page)["results"]:
            yield from results
            offset = results[-1]["index"] + 1

    def cancel_job(self, job_id: str) -> Job:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job and, for a batch job, its inputs and results (409 while it runs)."""
        self._request("DELETE", f"/v1/jobs/{job_id}")

    # --- meta-controller --------------------------------------------------------------------------------

    def train_controller(self, name: str, candidate_k: Sequence[int] | None = None, train_size: int | None = None,
                         selection: str | None = None, seed: int | None = None) -> str:
        """Start the training job; its id (follow it with ``wait_for_job``)."""
        body = _without_none({"candidate_k": list(candidate_k) if candidate_k is not None else None,
                              "train_size": train_size, "selection": selection, "seed": seed})
        return self._json("POST", f"/v1/tasks/{name}/controller", json=body)["job_id"]

    def get_controller(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/tasks/{name}/controller")

    def delete_controller(self, name: str) -> None:
        self._request("DELETE", f"/v1/tasks/{name}/controller")

    # --- selective annotation ---------------------------------------------------------------------------

    def annotation_plan(self, name: str, budget: int, method: str | None = None, seed: int | None = None,
                        confidence_demos: int | None = None, on_progress: Callable[[float], None] | None = None,
                        poll_s: float = 1.0) -> AnnotationPlan:
        """Which unlabeled examples to label first. A plan the service runs as a job is waited for."""
        body = _without_none({"budget": budget, "method": method, "seed": seed,
                              "confidence_demos": confidence_demos})
        response = self._request("POST", f"/v1/tasks/{name}/annotation-plan", json=body)
        if response.status_code == 202:
            job = self.wait_for_job(response.json()["job_id"], poll_s=poll_s, on_progress=on_progress)
            return job["result"]  # type: ignore[return-value]
        return response.json()

    # --- jobs -------------------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def list_jobs(self, task: str | None = None, kind: JobKind | None = None, status: JobStatus | None = None,
                  limit: int = 20, offset: int = 0) -> JobList:
        """A page of jobs (fits, annotation plans, batch jobs), newest first, with how many match in all."""
        params = _without_none({"task": task, "kind": kind, "status": status, "limit": limit, "offset": offset})
        return self._json("GET", "/v1/jobs", params=params)

    def wait_for_job(self, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None,
                     on_progress: Callable[[float], None] | None = None) -> Job:
        """Poll until the job ends; its final state (``JobFailed`` if it failed; a cancelled batch job is
        returned as it is, ``status`` "cancelled")."""
        began = time.monotonic()
        while True:
            job = self.get_job(job_id)
            if on_progress is not None:
                on_progress(job["progress"])
            if job["status"] in ("succeeded", "cancelled"):
                return job
            if job["status"] == "failed":
                raise JobFailed(job)
            if timeout_s is not None and time.monotonic() - began > timeout_s:
                raise ClientError(f"job {job_id} still {job['status']} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    # --- operations -------------------------------------------------------------------------------------

    def health(self) -> bool:
        """Whether the engine answers: False while it starts; ``APIError`` when it failed to start or fails."""
        try:
            self._request("GET", "/health", retry=False)
        except APIError as exc:
            if exc.code == "engine_not_ready":
                return False
            raise
        return True

    def wait_until_healthy(self, timeout_s: float = 300.0, poll_s: float = 1.0) -> None:
        began = time.monotonic()
        while True:
            try:
                if self.health():
                    return
            except ServiceUnreachable:
                pass
            if time.monotonic() - began > timeout_s:
                raise ClientError(f"the service at {self.url} was not healthy within {timeout_s:.0f} s")
            time.sleep(poll_s)

    def models(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/models")["data"]

    def metrics(self) -> str:
        return self._request("GET", "/metrics").text

    def reset_prefix_cache(self) -> None:
        """Empty the engine's prefix cache (benchmarks do, between timed configurations); needs the admin key
        (``admin_key``, default ``ICL_ADMIN_KEY``)."""
        self._request("POST", "/v1/admin/reset-prefix-cache", headers=self._admin_headers)
