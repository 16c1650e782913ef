"""Schemathesis against the app's own /openapi.json, every check, on the fake engine: no 5xx, every answer as
the document says, every constraint the server enforces stated in it. Findings accepted as correct behaviour
are listed, each with its reason, in fuzz_baseline.json; any other finding fails."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from service.app import create_app
from service.config import Settings
from service.state import Runtime
from tests.fakes import FakeEmbedder, FakeScorer
from tests.service.support import EXAMPLES, TASK

BASELINE = json.loads((Path(__file__).parent / "fuzz_baseline.json").read_text())
# Derandomized, so that CI meets the same cases every run. FUZZ_SEED=<int>: random generation seeded with it
# (FUZZ_RANDOM=1: with a fresh seed), reported at the end of the run and in every failure, so that
# FUZZ_SEED=<that seed> replays it. A larger FUZZ_CASES explores further.
CASES_PER_OPERATION = int(os.environ.get("FUZZ_CASES", "64"))


def _run_seed() -> int | None:
    """FUZZ_SEED, or a fresh seed under FUZZ_RANDOM=1; None: derandomized."""
    given = os.environ.get("FUZZ_SEED")
    if given:
        return int(given)
    return random.SystemRandom().randrange(2**32) if os.environ.get("FUZZ_RANDOM") == "1" else None


SEED = _run_seed()
DERANDOMIZE = SEED is None
REPLAY = f" (fuzz seed {SEED}: FUZZ_SEED={SEED} replays this run)" if SEED is not None else " (derandomized)"
MIN_CASES = 1000
CURL_CHARS = 2000  # of a failing case's command in the report (a generated body may be megabytes)
KEY = "fuzz-api-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
cases: dict[str, int] = {}
drawn = hashlib.sha256()  # of every case in order: two runs with one seed draw the same


# FUZZ_URL: fuzz a running service instead (the real engine, say), with FUZZ_API_KEY as its key.
FUZZ_URL = os.environ.get("FUZZ_URL")
if FUZZ_URL:
    AUTH = {"Authorization": f"Bearer {os.environ.get('FUZZ_API_KEY', KEY)}"}


def _seeded(loaded):
    """Schemathesis seeds each operation's generation from the run's seed and the operation's name. Cases are
    drawn both valid and invalid (wrongly typed values, missing fields, values out of range): an invalid one
    must get a 4xx."""
    if SEED is not None:
        loaded.config.seed = SEED
    loaded.config.generation.update(modes=list(GenerationMode))
    return loaded


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    if FUZZ_URL:
        with httpx.Client(base_url=FUZZ_URL, headers=AUTH, timeout=600) as client:
            client.delete(f"/v1/tasks/{TASK['name']}")
            client.post("/v1/tasks", json=TASK)
            client.post(f"/v1/tasks/{TASK['name']}/examples", json={"examples": EXAMPLES})
        yield _seeded(schemathesis.openapi.from_url(f"{FUZZ_URL}/openapi.json"))
        return
    settings_ = Settings(data_dir=tmp_path_factory.mktemp("fuzz"), api_keys=[KEY], admin_keys=["fuzz-admin-key"])
    app = create_app(settings_, runtime=Runtime(scorer=FakeScorer(), embedder=FakeEmbedder()))
    with TestClient(app) as client:  # runs the lifespan: store, jobs, engine state
        client.post("/v1/tasks", json=TASK, headers=AUTH)
        client.post(f"/v1/tasks/{TASK['name']}/examples", json={"examples": EXAMPLES}, headers=AUTH)
        yield _seeded(schemathesis.openapi.from_asgi("/openapi.json", app))


schema = schemathesis.pytest.from_fixture("api_schema")


def error_code(response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def accepted(operation: str, title: str, code: str | None) -> bool:
    """A finding in the baseline: the same operation, check and error code of the answer."""
    return any(entry["operation"] == operation and entry["finding"] == title and entry["code"] == code
               for entry in BASELINE)


@schema.parametrize()
@settings(max_examples=CASES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=DERANDOMIZE, database=None)
def test_every_operation_answers_as_its_schema_says(case):
    operation = case.operation.label
    cases[operation] = cases.get(operation, 0) + 1
    drawn.update(case.as_curl_command().encode("utf-8", "surrogatepass"))
    response = case.call(headers=AUTH)
    try:
        case.validate_response(response, headers=AUTH)
    except FailureGroup as group:
        new = [failure for failure in group.exceptions
               if not accepted(operation, failure.title, error_code(response))]
        if new:
            found = "; ".join(f"{failure.title}: {failure.message}" for failure in new)
            raise AssertionError(f"{found}\n{case.as_curl_command()[:CURL_CHARS]}\n-> {response.status_code} "
                                 f"{response.text[:500]}\n{REPLAY.strip()}") from None


def test_the_fuzzer_ran_enough_cases():
    if not cases:
        pytest.skip("run together with the fuzz test above")
    print(f"\nfuzz cases: {sum(cases.values())} over {len(cases)} operations, digest {drawn.hexdigest()[:16]}"
          f"{REPLAY}")
    assert sum(cases.values()) >= min(MIN_CASES, 16 * CASES_PER_OPERATION), cases


def test_every_baseline_entry_gives_its_reason():
    for entry in BASELINE:
        assert set(entry) == {"operation", "finding", "code", "reason"} and len(entry["reason"]) > 20, entry
