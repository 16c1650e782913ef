"""Decision heads on SmolLM2's own hidden state, against the embedding head and the fixed counts.

    python -m bench.hidden_heads bench/results/default-vs-fixed-YYYYmmdd-HHMMSS.json
    python -m bench.hidden_heads RESULTS.json --datasets sst2 trec --counts 0 1
    python -m bench.hidden_heads --table bench/results/hidden-heads-YYYYmmdd-HHMMSS.json   # the tables again
    python -m bench.hidden_heads RESULTS.json --model ~/.cache/iclserve/models/gemma-3-270m-q4_k_m \
        --datasets sst2 trec subj cr --counts 0 1 --without-runs     # another model: the file's pools and items only

For every dataset of a `bench/default_vs_fixed.py` results file (the same `n_train` pool rows and `n_test` test
items, checked against its gold labels), each example's ICL prompt at each count k (kNN demonstrations from the
pool, label names as verbalizers; a pool example's own near-twin group never among its demonstrations) goes to
vLLM's pooling runner (`service/hidden_states.py`), which returns the prompt's last-token hidden state. On
those states, fitted on the pool and scored on the test items:

- `centroid`: nearest label centroid (Hidden Calibration);
- `hidden-linear`: a logistic regression on the standardised state (FADS-ICL's read-out);
- `joint-linear`: the same on the state joined with the retrieval embedding;
- `knn-prompting`: the pool's next-token distributions (the state through the tied output embedding, the
  whole vocabulary; on `--full-vocabulary` datasets only, slow on a CPU) as anchors, eight nearest by KL;
  `knn-prompting-top64` keeps only the tokens among any anchor's 64 most likely, what a fit could store, and
  the results say how often the two agree where both ran.

Per head and count: test macro-F1 and ECE (15 bins), the head's cross-fitted estimate on the pool (near-twin
groups in one fold), paired 95% bootstrap intervals against the embedding head (`controller.heads`, 0 tokens)
and the file's best fixed count, the test prompts' tokens per input, and the pooling engine's seconds per
1,000 prompt tokens. The tables add the cascade of the embedding head then `joint-linear` at each count: its
threshold chosen on the pool's cross-fitted answers (the cheapest that keeps the better of the two there), then
replayed on the test items, its tokens the share sent on times the count's mean prompt tokens. Hidden states
are cached per model and dataset in .benchcache/. Results go to bench/results/hidden-heads-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.default_vs_fixed import DEFAULT, DRAWS, answers, best_count, fixed_counts
from bench.harness.cli import argument_parser
from bench.harness.figures import indices
from bench.harness.host import describe_host
from bench.harness.inprocess import CACHE, Embeddings, cached_vectors, default_model_dir, task_data
from bench.harness.results import add_out_argument, read_json, results_path, write_json
from controller.calibration_fit import fit_temperature, with_temperature
from controller.heads import (
    DECISION_HEADS,
    EmbeddingHead,
    HiddenLinearHead,
    KnnPromptingHead,
    cross_fitted,
    cross_fitted_with,
    next_token_logprobs,
    restricted,
    vocabulary_subset,
)
from controller.hidden_fit import demonstrations
from controller.metrics import bootstrap_rows, expected_calibration_error, macro_f1, paired_bootstrap
from controller.near_twins import cosine_for, twin_components
from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.retrieval import KnnRetriever, cosine_similarities

COUNTS = (0, 1, 2, 4)


class HiddenStateCache:
    """Hidden states by prompt token ids, per model and dataset, computed on the pooling engine when missing."""

    def __init__(self, folder: Path, model: str, reader: Any) -> None:
        self._folder, self._model, self._reader = folder, model, reader
        self._loop = asyncio.new_event_loop()  # the engine's loop: it is started in, and stays bound to, the first
        self.seconds, self.tokens = 0.0, 0

    def close(self, reader: Any) -> None:
        reader.shutdown()
        self._loop.run_until_complete(asyncio.sleep(0.1))  # the engine's output task sees its end on its loop

    def _path(self, dataset: str) -> Path:
        return self._folder / f"hidden-{self._model}-{dataset}.npz"

    def get(self, dataset: str, prompts: list[list[int]]) -> np.ndarray:
        def read(rows: list[int]) -> np.ndarray:
            wanted = [prompts[i] for i in rows]
            began = time.perf_counter()
            states = self._loop.run_until_complete(self._reader(wanted))
            self.seconds += time.perf_counter() - began
            self.tokens += sum(len(p) for p in wanted)
            return states

        keys = [hashlib.blake2b(np.asarray(p, np.int32).tobytes(), digest_size=12).hexdigest() for p in prompts]
        return cached_vectors(self._path(dataset), keys, read).astype(np.float32)


def head_answers(name: str, train: np.ndarray, gold: np.ndarray, test: np.ndarray, n_labels: int,
                 groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test probabilities, cross-fitted pool probabilities) of one head."""
    head = {**DECISION_HEADS, "joint-linear": HiddenLinearHead, "knn-prompting-top64": KnnPromptingHead}[name]
    return (head.fit(train, gold, n_labels).predict_proba(test),
            cross_fitted_with(head.fit, train, gold, n_labels, groups, seed))


def kept_probabilities(probs: np.ndarray, estimate: np.ndarray) -> dict[str, Any]:
    """The test probabilities and the pool's cross-fitted ones, rounded, for cascades and choices after the run."""
    return {"probs": np.round(probs, 4).tolist(), "cross_fitted": np.round(estimate, 4).tolist()}


def figures(probs: np.ndarray, estimate: np.ndarray, gold: np.ndarray, gold_pool: np.ndarray, n_labels: int,
            against: dict[str, np.ndarray], draws: np.ndarray) -> dict[str, Any]:
    mine = probs.argmax(axis=1)
    temperature = fit_temperature(estimate, gold_pool)  # what a fit would serve: tempered on the cross-fit
    return {"macro_f1": macro_f1(gold, mine, n_labels), "ece": expected_calibration_error(probs, gold),
            "temperature": temperature,
            "ece_tempered": expected_calibration_error(with_temperature(probs, temperature), gold),
            "estimate": macro_f1(gold_pool, estimate.argmax(axis=1), n_labels),
            **{f"vs_{name}": paired_bootstrap(gold, mine, theirs, n_labels, draws).as_dict()
               for name, theirs in against.items()}}


def measure(name: str, record: dict[str, Any], embeddings: Embeddings, hidden: HiddenStateCache, scorer: Any,
            output_embeddings: np.ndarray, counts: list[int], seed: int, full_vocabulary: bool) -> dict[str, Any]:
    data = task_data(name, record["n_train"], record["n_test"], seed)
    if [row["label"] for row in data.test_rows] != record["gold"]:
        raise SystemExit(f"{name}: the test items differ from the results file's (another seed or split?)")
    labels, n_labels = record["labels"], len(record["labels"])
    rows = data.pool_rows + data.test_rows
    vectors = embeddings.get(name, [data.template.embedding_text(data.query(r)) for r in rows])
    n_pool = len(data.pool_rows)
    pool_vectors, test_vectors = vectors[:n_pool], vectors[n_pool:]
    pool_inputs = [data.query(r) for r in data.pool_rows]
    gold_pool = indices([r["label"] for r in data.pool_rows], labels)
    gold = indices(record["gold"], labels)
    groups, _ = twin_components(pool_vectors, pool_inputs, cosine_for(data.template.fields))
    pool = LabeledPool(ids=[str(i) for i in range(n_pool)], inputs=pool_inputs,
                       labels=[r["label"] for r in data.pool_rows], embeddings=pool_vectors)
    builder = PromptBuilder.for_scorer(data.template, {label: label for label in labels}, pool, scorer)
    draws = bootstrap_rows(len(gold), DRAWS, np.random.default_rng(seed))
    embedding_probs = EmbeddingHead.fit(pool_vectors, gold_pool, n_labels).predict_proba(test_vectors)
    against = {"embedding_head": embedding_probs.argmax(axis=1)}
    out: dict[str, Any] = {"n_train": n_pool, "n_test": len(gold), "counts": {}}
    fixed = fixed_counts(record["runs"])
    if fixed:
        best = best_count(fixed)
        against["best_fixed"] = answers(fixed[best], labels)
        out |= {"best_k": best, "best_macro_f1": fixed[best]["macro_f1"],
                "best_prompt_tokens": fixed[best]["prompt_tokens_per_input"]}
    if DEFAULT in record["runs"]:
        against["default"] = answers(record["runs"][DEFAULT], labels)
        out["default_macro_f1"] = record["runs"][DEFAULT]["macro_f1"]
    embedding_estimate = cross_fitted(pool_vectors, gold_pool, n_labels, groups, seed)
    out["embedding_head"] = figures(embedding_probs, embedding_estimate, gold, gold_pool, n_labels,
                                    {k: v for k, v in against.items() if k != "embedding_head"}, draws)
    out["embedding_head"] |= kept_probabilities(embedding_probs, embedding_estimate)
    out["gold_pool"] = gold_pool.tolist()
    out["gold"] = gold.tolist()
    test_sims = cosine_similarities(test_vectors, pool_vectors)
    for k in counts:
        pool_demos = demonstrations(pool_vectors, groups, k)  # as the service's fit draws them
        test_demos = [KnnRetriever().select(row, pool_vectors, k) for row in test_sims]  # as it serves them
        pool_prompts = [builder.tokenize(builder.render(q, d)) for q, d in zip(pool_inputs, pool_demos, strict=True)]
        test_prompts = [builder.tokenize(builder.render(data.query(r), d))
                        for r, d in zip(data.test_rows, test_demos, strict=True)]
        before_s, before_t = hidden.seconds, hidden.tokens
        states = hidden.get(name, pool_prompts + test_prompts)
        train, test = states[:n_pool], states[n_pool:]
        logprobs = next_token_logprobs(states, output_embeddings)
        kept = vocabulary_subset(logprobs[:n_pool])
        features = {"centroid": (train, test), "hidden-linear": (train, test),
                    "joint-linear": (np.hstack([train, pool_vectors]), np.hstack([test, test_vectors])),
                    "knn-prompting-top64": (restricted(logprobs[:n_pool], kept), restricted(logprobs[n_pool:], kept))}
        if full_vocabulary:  # the whole vocabulary's anchors: slow on a CPU, so on the datasets asked for
            features["knn-prompting"] = (logprobs[:n_pool], logprobs[n_pool:])
        del logprobs
        heads: dict[str, Any] = {}
        for head, (a, b) in features.items():
            probs, estimate = head_answers(head, a, gold_pool, b, n_labels, groups, seed)
            heads[head] = figures(probs, estimate, gold, gold_pool, n_labels, against, draws)
            heads[head] |= {"answers": probs.argmax(axis=1).tolist(), **kept_probabilities(probs, estimate)}
        agree = (float(np.mean(np.equal(*(heads[h]["answers"] for h in ("knn-prompting", "knn-prompting-top64")))))
                 if full_vocabulary else None)
        spent_t = hidden.tokens - before_t
        out["counts"][str(k)] = {
            "prompt_tokens_per_input": float(np.mean([len(p) for p in test_prompts])),
            "pooling_s_per_1k_tokens": (hidden.seconds - before_s) / spent_t * 1000 if spent_t else None,
            "top64_vocabulary": int(len(kept)), "top64_agreement": agree, "heads": heads}
        print(name, f"k={k}", {h: round(v["macro_f1"], 3) for h, v in heads.items()},
              "embedding", round(out["embedding_head"]["macro_f1"], 3), "best fixed", out.get("best_macro_f1"),
              flush=True)
    return out


def head_cascade(record: dict[str, Any], k: str, head: str = "joint-linear") -> dict[str, float] | None:
    """The embedding head first, then ``head`` at count ``k``, for the inputs the embedding head is unsure of."""
    from controller.cascade import HEAD_STAGE, cheapest_thresholds, replay

    count = record["counts"][k]
    gold_pool = np.asarray(record["gold_pool"])
    n_labels = len(record["embedding_head"]["probs"][0])
    pool = np.stack([np.asarray(record["embedding_head"]["cross_fitted"]),
                     np.asarray(count["heads"][head]["cross_fitted"])], axis=1)
    tokens = count["prompt_tokens_per_input"]
    stages = [HEAD_STAGE, int(k)]
    cascade = cheapest_thresholds((HEAD_STAGE, int(k)), pool, gold_pool,
                                  np.tile([0.0, tokens], (len(pool), 1)), stages, n_labels, 0.0)
    if cascade is None:
        return None
    test = np.stack([np.asarray(record["embedding_head"]["probs"]), np.asarray(count["heads"][head]["probs"])],
                    axis=1)
    played = replay(cascade, test, np.tile([0.0, tokens], (len(test), 1)), stages)
    return {"threshold": cascade.thresholds[0], "tokens": float(played.tokens.mean()),
            "share_on": float((played.k != HEAD_STAGE).mean()),
            "macro_f1": macro_f1(np.asarray(record["gold"]), played.answers, n_labels)}


HEADS = ("joint-linear", "hidden-linear", "centroid", "knn-prompting-top64")


def with_gold(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The datasets' records, each with its test items' gold label indices (runs made before records kept them
    take them from the source file, or from the dataset)."""
    source = None
    out = {}
    for name, record in doc["datasets"].items():
        if "gold" not in record:
            if source is None:
                source = read_json(Path(doc["source"]))
            found = source["datasets"].get(name)
            if found is None:
                data = task_data(name, record["n_train"], record["n_test"], int(doc.get("seed", 0)))
                found = {"labels": data.labels, "gold": [row["label"] for row in data.test_rows]}
            record = {**record, "gold": indices(found["gold"], found["labels"]).tolist()}
        out[name] = record
    return out


def print_tables(doc: dict[str, Any]) -> None:
    from bench.harness.tables import cell, print_table

    datasets = with_gold(doc)
    counts = doc["counts"]
    rows, means = [], {}
    for name, record in datasets.items():
        row: list[object] = [name, cell(record.get("best_macro_f1")), record.get("best_k", "-"),
                             cell(record["embedding_head"]["macro_f1"])]
        for k in map(str, counts):
            if k not in record["counts"]:
                row += ["-"] * (len(HEADS) + 1)
                continue
            heads = record["counts"][k]["heads"]
            found = [heads[h]["macro_f1"] for h in HEADS]
            played = head_cascade(record, k)
            row += [cell(v) for v in found] + [
                f"{played['macro_f1']:.3f} / {played['tokens']:.0f}" if played is not None else "-"]
            for h, v in zip(HEADS, found, strict=True):
                means.setdefault((k, h), []).append(v)
        rows.append(row)
    header = ["dataset", "best fixed", "k", "embedding head"]
    for k in counts:
        header += [f"{h} k={k}" for h in HEADS] + [f"head then joint k={k} (F1 / tok)"]
    print_table(header, rows, "Test macro-F1 of each head at each count")
    print("\nmean over datasets: " + "; ".join(f"{h} k={k}: {np.mean(v):.3f} ({len(v)})"
                                              for (k, h), v in sorted(means.items())))
    ece = [[name, *(cell(record["counts"][str(k)]["heads"]["joint-linear"][key]) if str(k) in record["counts"]
                    else "-" for k in counts for key in ("ece", "ece_tempered"))]
           for name, record in datasets.items()]
    print_table(["dataset", *(f"joint k={k} {what}" for k in counts for what in ("ECE", "ECE tempered"))], ece,
                "ECE of the joint head (15 bins), raw and tempered on its cross-fitted pool answers")


def outside_the_file(name: str, n_train: int, n_test: int, seed: int) -> dict[str, Any]:
    """A dataset the results file lacks: the same pool and test sizes and shuffles, no fixed counts to compare."""
    data = task_data(name, n_train, n_test, seed)
    return {"n_train": n_train, "n_test": len(data.test_rows), "labels": data.labels,
            "gold": [row["label"] for row in data.test_rows], "runs": {}}


def merged(paths: list[Path]) -> dict[str, Any]:
    """Results files as one document: the first one's settings, every file's datasets (later ones win), the
    counts of any of them."""
    docs = [read_json(path) for path in paths]
    counts = sorted({int(k) for doc in docs for k in doc["counts"]})
    return {**docs[0], "counts": counts, "datasets": {name: record for doc in docs
                                                      for name, record in doc["datasets"].items()}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name if __spec__ else "bench.hidden_heads")
    parser.add_argument("results", type=Path, nargs="?", help="a bench/default_vs_fixed.py results file")
    parser.add_argument("--table", type=Path, nargs="+",
                        help="only print the tables of earlier hidden-heads results files (their datasets merged)")
    parser.add_argument("--without-runs", action="store_true",
                        help="take only the file's pools and items, not its runs (another model than the file's)")
    parser.add_argument("--datasets", nargs="*", help="some of the file's datasets (default: all)")
    parser.add_argument("--counts", nargs="*", type=int, default=list(COUNTS))
    parser.add_argument("--full-vocabulary", nargs="*", default=["sst2"],
                        help="datasets where kNN Prompting also runs on the whole vocabulary (slow on a CPU)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="embedding and hidden-state cache folder")
    parser.add_argument("--embeddings", choices=["compute", "cache-only"], default="compute")
    parser.add_argument("--model", help="local model folder (default: the service's default model)")
    add_out_argument(parser)
    return parser.parse_args(argv)


def output_embeddings_of(model_dir: Path) -> np.ndarray:
    """The tied input/output embedding matrix, read from the model's safetensors file (through torch: numpy has
    no bfloat16)."""
    from safetensors.torch import load_file

    for path in sorted(model_dir.glob("*.safetensors")):
        for key, value in load_file(str(path)).items():
            if key.endswith("embed_tokens.weight"):
                return value.float().numpy()
    raise SystemExit(f"{model_dir}: no embed_tokens.weight (is the output embedding tied?)")


class Tokenizer:
    """What a PromptBuilder needs of a scorer, without an engine: the model's tokenizer and window."""

    def __init__(self, model_dir: Path, max_model_len: int) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.max_model_len = max_model_len

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def continuation_ids(self, continuation: str) -> list[int]:
        return list(self._tokenizer(continuation, add_special_tokens=False)["input_ids"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table:
        print_tables(merged(args.table))
        return
    source = read_json(args.results)
    seed = int(source["args"].get("seed", 0))
    model_dir = Path(args.model) if args.model else default_model_dir()
    from service.config import Settings
    from service.hidden_states import VllmHiddenStates

    settings = Settings()
    reader = VllmHiddenStates(model_dir, settings)
    scorer = Tokenizer(model_dir, settings.max_model_len or 2048)
    hidden = HiddenStateCache(args.cache, model_dir.name, reader.states)
    output_embeddings = output_embeddings_of(model_dir)
    embeddings = Embeddings(args.cache, args.embeddings)
    names = args.datasets or [n for n, r in source["datasets"].items() if "runs" in r and fixed_counts(r["runs"])]
    n_train, n_test = int(source["args"]["n_train"]), int(source["args"]["n_test"])
    path = results_path(args.out, "hidden-heads")
    doc: dict[str, Any] = {"benchmark": "hidden_heads", "source": str(args.results), "seed": seed,
                           "model": model_dir.name, "host": describe_host(), "counts": args.counts, "datasets": {}}
    try:
        for name in names:
            record = source["datasets"].get(name) or outside_the_file(name, n_train, n_test, seed)
            if args.without_runs:
                record = {**record, "runs": {}}
            doc["datasets"][name] = measure(name, record, embeddings, hidden, scorer,
                                            output_embeddings, args.counts, seed, name in args.full_vocabulary)
            write_json(path, doc, indent=None)  # per-item probabilities: one line, not one number per line
    finally:
        hidden.close(reader)
    print_tables(doc)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
