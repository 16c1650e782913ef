"""The service against raw vLLM on the very same prompts: how much of the engine's throughput serving keeps.

    python bench/throughput.py                                   # TREC, pool 1000, 64 test inputs, k = 4, kNN
    python bench/throughput.py --n 64 --clients 1 8 64 --repeats 3
    python bench/throughput.py --profile bench/results/profile --profile-modes c1 c8   # py-spy, see below

One task (--dataset, default TREC: 6 labels, each one token; the shared datasets have no SST-5) with --pool-size
shuffled training examples as its labeled pool, and --n shuffled test inputs (seed 0), predicted with
`demos: 4`, `selection: "knn"`, `calibration: "none"`. Modes:

- batch: one request holding all N inputs (raw: all N prompts submitted at once);
- cC: C concurrent clients, one input per request, each client sending its share of the inputs in sequence
  (raw: C coroutines, each awaiting its prompts one after another).

The service is a real server process (`python -m service.cli serve`, automatic fits off) with an admin key of
the benchmark's own, so that the prefix cache is emptied (POST /v1/admin/reset-prefix-cache) before each timing.
An untimed request of all N inputs with `include_prompt` warms it up and gives the prompts: each prompt's text,
tokenized as the service tokenizes it, must have exactly the response's `prompt_tokens` tokens.

Then the server is stopped and the same prompt token ids go to vLLM's own `AsyncLLM` in this process: the same
engine arguments (`service.engine.engine_arguments`: model folder, dtype, block size, prefix caching,
scheduling policy), CPU environment (`apply_cpu_defaults`) and label token ids, one request per distinct
label-token prefix (`SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=..., detokenize=False)`),
`engine.reset_prefix_cache()` before each timing, after one untimed batch of warm-up. The two engines never
run at the same time. Raw vLLM's labels and probabilities are checked against the service's warm-up answers.

Each mode is timed --repeats times (rounds over all modes, so that noise on the shared machine spreads over
every mode) and medians are reported: seconds, throughput ratio raw_s / service_s (the service's throughput as
a fraction of raw vLLM's), prompt tokens per second. The 1-minute load average is recorded before and after
each timing. JSON goes to bench/results/throughput-<time>.json with the host's CPU flags and the dtype.

Engine settings go in the environment (`ICL_*`, `VLLM_CPU_*`), which the server and raw vLLM both read; with
--raw-only RESULTS, raw vLLM alone runs on the prompts an earlier run saved, to compare engine settings.

With --profile DIR, after the timings and before the server stops, each of --profile-modes is run
--profile-rounds more times under `py-spy record --subprocesses --format raw` attached to the server (DIR/
service-<mode>.txt, collapsed stacks: `python bench/throughput.py --summarise-profile FILE` breaks them down by
process and activity: event loop, planning threads (embedder, store read, tokenizing, retrieval), vLLM's engine
core and its model worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_http import DEFAULT_TEMPLATE, TEMPLATES, input_of, load, manifest_labels, start_server  # noqa: E402

from controller.scoring import continuation_requests  # noqa: E402
from controller.templates import PromptTemplate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASK = "throughput"
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    present = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in FLAGS if flag in present]


def load_1m() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` cut into ``parts`` contiguous shares of (almost) equal size, in order; no share empty."""
    parts = min(parts, len(items))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(list(items[start:end]))
        start = end
    return out


def modes(clients: Sequence[int]) -> list[str]:
    return ["batch", *(f"c{c}" for c in clients)]


def clients_of(mode: str, n: int) -> int:
    return n if mode == "batch" else int(mode[1:])


# --- the service ---------------------------------------------------------------------------------------------


@contextmanager
def server(extra_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """`iclserve serve` on a free port, a temporary data directory, its own admin key, automatic fits off."""
    data_dir = tempfile.mkdtemp(prefix="iclthroughput-")
    admin_key = secrets.token_hex(16)
    env = {"ICL_ADMIN_KEYS": admin_key, "ICL_AUTO_FIT": "false", **extra_env}
    proc, url = start_server(data_dir, env)
    try:
        yield proc, url, admin_key
    finally:
        proc.terminate()
        proc.wait(timeout=120)


def setup_task(client: httpx.Client, dataset: str, pool: list[dict], template: str) -> None:
    if client.get(f"/v1/tasks/{TASK}").status_code == 200:
        client.delete(f"/v1/tasks/{TASK}").raise_for_status()
    client.post("/v1/tasks", json={"name": TASK, "labels": manifest_labels(dataset), "template": template}
                ).raise_for_status()
    examples = [{"id": f"{dataset}-{i}", "input": input_of(row, template), "label": row["label"]}
                for i, row in enumerate(pool)]
    client.post(f"/v1/tasks/{TASK}/examples", json={"examples": examples}, timeout=1800).raise_for_status()


def predict_body(inputs: list[Any], k: int, include_prompt: bool = False) -> dict:
    return {"inputs": inputs, "demos": k, "selection": "knn", "calibration": "none",
            "include_prompt": include_prompt}


async def service_run(url: str, admin_key: str, inputs: list[Any], k: int, clients: int) -> dict:
    """One timing through HTTP: ``clients`` concurrent clients, one input per request, each sending its share of
    the inputs in sequence; ``clients`` 0: one request of every input."""
    limits = httpx.Limits(max_connections=max(clients, 1), max_keepalive_connections=max(clients, 1))
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:
        (await client.post("/v1/admin/reset-prefix-cache",
                           headers={"Authorization": f"Bearer {admin_key}"})).raise_for_status()
        answers: dict[int, dict] = {}
        latencies: list[float] = []

        async def one(indices: list[int]) -> None:
            began = time.perf_counter()
            response = await client.post(f"/v1/tasks/{TASK}/predict",
                                         json=predict_body([inputs[i] for i in indices], k))
            response.raise_for_status()
            latencies.append(time.perf_counter() - began)
            body = response.json()
            for i, prediction in zip(indices, body["predictions"], strict=True):
                answers[i] = {"prediction": prediction, "usage": body["usage"] if len(indices) == 1 else None}
            if len(indices) > 1:
                answers[-1] = {"usage": body["usage"]}

        async def client_loop(share: list[int]) -> None:
            for i in share:
                await one([i])

        load_before = load_1m()
        began = time.perf_counter()
        if clients == 0:
            await one(list(range(len(inputs))))
        else:
            await asyncio.gather(*(client_loop(share) for share in split(range(len(inputs)), clients)))
        seconds = time.perf_counter() - began
        load_after = load_1m()
    usages = [a["usage"] for a in answers.values() if a.get("usage")]
    return {
        "seconds": seconds, "load_before": load_before, "load_after": load_after,
        "cached_tokens": sum(u["cached_tokens"] for u in usages),
        "computed_tokens": sum(u["computed_tokens"] for u in usages),
        "latency_median_s": statistics.median(latencies),
        "labels": [answers[i]["prediction"]["label"] for i in range(len(inputs))],
        "demo_ids": [answers[i]["prediction"]["demo_ids"] for i in range(len(inputs))],
    }


class Profiler:
    """py-spy attached to a process and its children, collapsed stacks to ``out``; stopped with SIGINT."""

    def __init__(self, pid: int, out: Path, rate: int) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--subprocesses", "--format", "raw",
                                      "--rate", str(rate), "--output", str(out), "--nonblocking"],
                                     stdout=subprocess.DEVNULL, stderr=out.with_suffix(".log").open("w"))
        time.sleep(2.0)  # attach before the work starts

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_service(args: argparse.Namespace, pool: list[dict], test: list[dict], template: str) -> dict:
    inputs = [input_of(row, template) for row in test]
    extra_env = dict(kv.split("=", 1) for kv in args.server_env)
    out: dict = {"runs": {m: [] for m in modes(args.clients)}}
    with server(extra_env) as (proc, url, admin_key), httpx.Client(base_url=url, timeout=3600) as client:
        setup_task(client, args.dataset, pool, template)
        # Untimed: warms the engine and the task's context, and gives the prompts the service builds.
        client.post("/v1/admin/reset-prefix-cache", headers={"Authorization": f"Bearer {admin_key}"}
                    ).raise_for_status()
        response = client.post(f"/v1/tasks/{TASK}/predict", json=predict_body(inputs, args.k, include_prompt=True))
        response.raise_for_status()
        body = response.json()
        out["prompts"] = [p["prompt"] for p in body["predictions"]]
        out["prompt_tokens"] = [p["prompt_tokens"] for p in body["predictions"]]
        out["labels"] = [p["label"] for p in body["predictions"]]
        out["uncalibrated_probs"] = [p["uncalibrated_probs"] for p in body["predictions"]]
        out["demo_ids"] = [p["demo_ids"] for p in body["predictions"]]
        out["model"] = body["model"]
        for repeat in range(args.repeats):
            for mode in modes(args.clients):
                clients = 0 if mode == "batch" else clients_of(mode, len(inputs))
                run = asyncio.run(service_run(url, admin_key, inputs, args.k, clients))
                if run["demo_ids"] != out["demo_ids"]:
                    raise SystemExit(f"service {mode}: other demonstrations than the warm-up's; not comparable")
                run.pop("demo_ids")
                out["runs"][mode].append(run)
                print(f"service {mode} #{repeat + 1}: {run['seconds']:.2f} s (load {run['load_before']:.2f} -> "
                      f"{run['load_after']:.2f})", flush=True)
        if args.profile is not None:
            for mode in args.profile_modes:
                clients = 0 if mode == "batch" else clients_of(mode, len(inputs))
                profiler = Profiler(proc.pid, args.profile / f"service-{args.profile_tag}{mode}.txt", args.profile_rate)
                seconds = []
                for _ in range(args.profile_rounds):
                    seconds.append(asyncio.run(service_run(url, admin_key, inputs, args.k, clients))["seconds"])
                profiler.stop()
                print(f"profiled service {mode}: {args.profile_rounds} rounds, "
                      f"{' / '.join(f'{s:.2f}' for s in seconds)} s", flush=True)
                out.setdefault("profiled", {})[mode] = seconds
    return out


# --- raw vLLM ------------------------------------------------------------------------------------------------


def engine_config() -> tuple[Path, dict[str, Any]]:
    """The model folder and the engine arguments the service's settings give (``service.engine.engine_arguments``,
    the same environment read), with the CPU environment the service sets applied to this process too."""
    from service.config import Settings
    from service.engine import apply_cpu_defaults, engine_arguments, is_cpu_build
    from service.model_files import resolve_model

    settings = Settings()
    on_cpu = is_cpu_build()
    if on_cpu:
        apply_cpu_defaults(settings)
    model_dir = resolve_model(settings.model, settings.model_cache)
    return model_dir, engine_arguments(model_dir, settings, on_cpu)


async def raw_runs(args: argparse.Namespace, prompts: list[list[int]], continuations: list[list[int]]) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir, arguments = engine_config()
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import TokensPrompt
    from vllm.v1.engine.async_llm import AsyncLLM

    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**arguments))
    requests = continuation_requests(continuations)  # what every prompt needs read: one request per prefix
    counter = 0

    async def read(ids: list[int], wanted: list[int]) -> tuple[dict[int, float], int]:
        nonlocal counter
        counter += 1
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=wanted, detokenize=False)
        final = None
        async for output in engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id=f"raw-{counter}"):
            final = output
        assert final is not None and final.outputs[0].logprobs
        step = final.outputs[0].logprobs[0]
        return {t: float(step[t].logprob) for t in wanted}, int(final.num_cached_tokens or 0)

    async def one_prompt(ids: list[int]) -> tuple[list[float], int]:
        answers = await asyncio.gather(*(read(ids + list(p), wanted) for p, wanted in requests.items()))
        got = dict(zip(requests, (a[0] for a in answers), strict=True))
        logprobs = [sum(got[tuple(c[:j])][t] for j, t in enumerate(c)) for c in continuations]
        return logprobs, sum(a[1] for a in answers)

    async def timing(mode: str) -> dict:
        await engine.reset_prefix_cache()
        results: dict[int, tuple[list[float], int]] = {}

        async def client_loop(share: list[int]) -> None:
            for i in share:
                results[i] = await one_prompt(prompts[i])

        load_before = load_1m()
        began = time.perf_counter()
        if mode == "batch":
            for i, r in enumerate(await asyncio.gather(*(one_prompt(p) for p in prompts))):
                results[i] = r
        else:
            await asyncio.gather(*(client_loop(s) for s in split(range(len(prompts)), clients_of(mode, len(prompts)))))
        seconds = time.perf_counter() - began
        return {"seconds": seconds, "load_before": load_before, "load_after": load_1m(),
                "cached_tokens": sum(r[1] for r in results.values()),
                "logprobs": [results[i][0] for i in range(len(prompts))]}

    out: dict = {"dtype": str(engine.model_config.dtype).removeprefix("torch."),
                 "block_size": engine.vllm_config.cache_config.block_size, "arguments": arguments,
                 "model_dir": str(model_dir), "runs": {m: [] for m in modes(args.clients)},
                 "env": {k: os.environ.get(k) for k in ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND",
                                                        "VLLM_CPU_NUM_OF_RESERVED_CPU")},
                 "max_num_batched_tokens": engine.vllm_config.scheduler_config.max_num_batched_tokens,
                 "max_num_seqs": engine.vllm_config.scheduler_config.max_num_seqs}
    try:
        await timing("batch")  # warm-up, untimed
        for repeat in range(args.repeats):
            for mode in modes(args.clients):
                run = await timing(mode)
                out["runs"][mode].append(run)
                print(f"raw {mode} #{repeat + 1}: {run['seconds']:.2f} s (load {run['load_before']:.2f} -> "
                      f"{run['load_after']:.2f})", flush=True)
    finally:
        engine.shutdown()
        engine = None  # collected now, not at interpreter exit (where its __del__ finds the modules gone)
    return out


# --- the comparison ------------------------------------------------------------------------------------------


def task_rows(args: argparse.Namespace) -> tuple[list[dict], list[dict], str]:
    train, test = load(args.dataset, "train"), load(args.dataset, "test")
    random.Random(args.seed).shuffle(train)
    random.Random(args.seed).shuffle(test)
    if len(train) < args.pool_size or len(test) < args.n:
        raise SystemExit(f"{args.dataset}: {len(train)} training and {len(test)} test rows; asked for "
                         f"{args.pool_size} and {args.n}")
    return train[:args.pool_size], test[:args.n], TEMPLATES.get(args.dataset, DEFAULT_TEMPLATE)


def summary(args: argparse.Namespace, service: dict, raw: dict, prompt_tokens: int) -> list[dict]:
    rows = []
    for mode in modes(args.clients):
        s = statistics.median(r["seconds"] for r in service["runs"][mode]) if service["runs"].get(mode) else None
        r = statistics.median(x["seconds"] for x in raw["runs"][mode]) if raw["runs"].get(mode) else None
        rows.append({
            "mode": mode, "service_s": s, "raw_s": r, "ratio": r / s if s and r else None,
            "service_tok_s": prompt_tokens / s if s else None, "raw_tok_s": prompt_tokens / r if r else None,
            "service_s_runs": [x["seconds"] for x in service["runs"].get(mode, [])],
            "raw_s_runs": [x["seconds"] for x in raw["runs"].get(mode, [])],
        })
    return rows


def print_table(rows: list[dict], header: str) -> None:
    print(f"\n{header}\n")
    print("| mode | service s | raw vLLM s | ratio raw/service | service prompt tok/s | raw prompt tok/s |")
    print("|---|---|---|---|---|---|")

    def f(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for row in rows:
        name = "batch (1 request of N)" if row["mode"] == "batch" else f"{row['mode'][1:]} clients"
        print(f"| {name} | {f(row['service_s'], 2)} | {f(row['raw_s'], 2)} | {f(row['ratio'], 2)} | "
              f"{f(row['service_tok_s'], 0)} | {f(row['raw_tok_s'], 0)} |")


def agreement(service: dict, raw: dict, labels: list[str]) -> dict:
    """Raw vLLM's argmax against the service's labels, and the largest probability difference (bf16 results
    depend a little on how the engine batches)."""
    import numpy as np

    first = raw["runs"]["batch"][0]["logprobs"] if raw["runs"].get("batch") else None
    if first is None:
        return {}
    worst, same = 0.0, 0
    for logprobs, label, probs in zip(first, service["labels"], service["uncalibrated_probs"], strict=True):
        values = np.exp(np.asarray(logprobs) - max(logprobs))
        values /= values.sum()
        same += labels[int(np.argmax(values))] == label
        worst = max(worst, max(abs(float(v) - probs[name]) for v, name in zip(values, labels, strict=True)))
    return {"same_label": same, "of": len(first), "max_abs_prob_diff": worst}


def profile_category(stack: str) -> str:
    """Where a py-spy stack of the server (``--subprocesses``) was: its process, then what it was doing."""
    frames = stack.split(";")
    process = [f for f in frames if f.startswith("process ")][-1]
    has = lambda *needles: any(n in stack for n in needles)  # noqa: E731
    if "VLLM::Worker" in process:
        if has("_model_forward", "compute_logits", "onednn_mm"):
            return "engine worker: model forward (and logits)"
        if not has("execute_model") and has("sched_yield", "acquire_read", "MessageQueue.dequeue"):
            return "engine worker: spin-waiting for work (sched_yield)"
        return "engine worker: other (inputs, sampling, logprobs)"
    if "VLLM::EngineCore" in process:
        if has("_wait_for_response"):
            return "engine core: spin-waiting for the worker (sched_yield)"
        if has("Scheduler.schedule", "Scheduler.update_from_output"):
            return "engine core: scheduler"
        return "engine core: other (requests, outputs, ZMQ)"
    if has("Thread._bootstrap"):  # the API process's worker threads: planning
        if has("SentenceEmbedder.embed"):
            return "API planning thread: embedder"
        if has("ContextCache.get", "task_versions"):
            return "API planning thread: task context (store read)"
        if has("tokenize", "_encode_plus"):
            return "API planning thread: tokenize"
        if has("Predictor.plan", "controller/"):
            return "API planning thread: retrieval, prompts"
        return "API planning thread: other"
    if frames[-1].startswith("Runner.run "):
        return "API event loop: loop itself (uvloop, callbacks)"
    if has("vllm/"):
        return "API event loop: vLLM client (add_request, output handler)"
    if has("service/serving", "service/engine", "service/routes", "controller/"):
        return "API event loop: service code (scoring calls, response)"
    if has("uvicorn", "starlette", "fastapi", "pydantic", "httptools", "json"):
        return "API event loop: HTTP, FastAPI, pydantic"
    return "API event loop: loop itself (uvloop, callbacks)"


def summarise_profile(path: Path, top: int) -> dict[str, float]:
    """A py-spy raw (collapsed) profile of the server broken down by ``profile_category`` (shares of all samples:
    at 100 Hz, 100 samples are about one CPU-second of a Python thread), then the top self and inclusive frames."""
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    total = sum(stacks.values())
    categories: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        categories[profile_category(stack)] += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            if not frame.startswith("process "):
                inclusive[frame] += count
    print(f"{path}: {total} samples")
    print("\nby category:")
    for name, count in sorted(categories.items()):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\nself:")
    for name, count in self_time.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\ninclusive:")
    for name, count in inclusive.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    return {name: count / total for name, count in categories.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="trec")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--n", type=int, default=64, help="test inputs")
    parser.add_argument("--k", type=int, default=4, help="demonstrations per input (kNN)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-raw", action="store_true", help="the service only (e.g. while profiling)")
    parser.add_argument("--raw-only", type=Path, metavar="RESULTS",
                        help="raw vLLM only, on the prompts of an earlier results file (engine settings)")
    parser.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE", help="extra server settings")
    parser.add_argument("--profile", type=Path, help="folder for py-spy profiles of the server")
    parser.add_argument("--profile-modes", nargs="+", default=["c1", "c8"])
    parser.add_argument("--profile-rounds", type=int, default=3)
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--profile-tag", default="", help="prefix of the profile files' names")
    parser.add_argument("--summarise-profile", type=Path, nargs="+", help="only break down py-spy raw profiles")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if args.summarise_profile:
        for path in args.summarise_profile:
            summarise_profile(path, args.top)
        return

    pool, test, template_text = task_rows(args)
    started = time.strftime("%Y%m%d-%H%M%S")
    if args.raw_only:
        earlier = json.loads(args.raw_only.read_text())
        service = {"runs": {}, "model": earlier["model"], **earlier["service_prompts"]}
    else:
        service = run_service(args, pool, test, template_text)

    from transformers import AutoTokenizer

    model_dir, arguments = engine_config()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # The service's tokenization (service/engine.py): the whole prompt, special tokens as the model adds them.
    prompts = [list(tokenizer(text, add_special_tokens=True)["input_ids"]) for text in service["prompts"]]
    mismatched = [i for i, (ids, n) in enumerate(zip(prompts, service["prompt_tokens"], strict=True)) if len(ids) != n]
    if mismatched:
        raise SystemExit(f"prompts {mismatched[:5]}: token counts differ from the service's prompt_tokens")
    template = PromptTemplate.parse(template_text)
    labels = manifest_labels(args.dataset)
    continuations = [list(tokenizer(template.continuation(label), add_special_tokens=False)["input_ids"])
                     for label in labels]
    prompt_tokens = sum(len(p) for p in prompts)

    raw: dict = {"runs": {}}
    if not args.skip_raw:
        raw = asyncio.run(raw_runs(args, prompts, continuations))
    rows = summary(args, service, raw, prompt_tokens)
    flags = cpu_flags()
    result = {
        "dataset": args.dataset, "labels": labels, "pool_size": args.pool_size, "n": args.n, "k": args.k,
        "selection": "knn", "calibration": "none", "repeats": args.repeats, "clients": args.clients,
        "model": service["model"], "dtype": raw.get("dtype", arguments["dtype"]), "cpu_flags": flags,
        "cores": os.cpu_count(),
        "server_env": args.server_env, "prompt_tokens": prompt_tokens, "label_token_ids": continuations,
        "engine": {k: raw.get(k) for k in ("arguments", "block_size", "env", "max_num_batched_tokens",
                                            "max_num_seqs")},
        "agreement": agreement(service, raw, labels) if raw["runs"] else {},
        "summary": rows,
        "service_runs": {m: [{k: v for k, v in r.items() if k != "labels"} for r in runs]
                         for m, runs in service["runs"].items()},
        "raw_runs": {m: [{k: v for k, v in r.items() if k != "logprobs"} for r in runs]
                     for m, runs in raw["runs"].items()},
        "profiled": service.get("profiled"),
        "raw_only_prompts_from": str(args.raw_only) if args.raw_only else None,
        "service_prompts": {k: service[k] for k in ("prompts", "prompt_tokens", "labels", "uncalibrated_probs",
                                                    "demo_ids")},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"throughput-{started}.json"
    path.write_text(json.dumps(result, indent=1))
    print_table(rows, f"{args.dataset}, pool {args.pool_size}, N = {args.n}, k = {args.k} kNN, calibration none; "
                      f"{result['dtype']}, CPU flags {' '.join(flags)}; {prompt_tokens} prompt tokens; medians of "
                      f"{args.repeats}")
    if result["agreement"]:
        print(f"\nraw vLLM against the service: {result['agreement']}")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
