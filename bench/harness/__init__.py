"""What the benchmarks share, one job per module:

- ``datasets``: the shared datasets (``ICL_DATASETS_DIR``, default ``../shared/datasets``) or the ``tests/data``
  slices, their MANIFEST labels, the benchmarks' templates and seeded shuffles;
- ``server``: a running service (``--url``) or an ``iclserve serve`` of the benchmark's own, on the real engine
  or the fake one, emptying its prefix cache, and waiting for a task's automatic fit;
- ``host``: the machine a figure was measured on (CPU flags, cores, load, the engine's dtype);
- ``results``: JSON under ``bench/results/``, written as a run goes and read back by ``--table``;
- ``tables``: Markdown tables;
- ``figures``: accuracy and macro-F1 of label names, by ``controller.metrics``;
- ``inprocess``: the ICL library driven directly, on vLLM or transformers, without the HTTP service;
- ``raw_engine``: vLLM's own ``AsyncLLM`` on the service's prompts, the yardstick of serving overhead;
- ``profiling``: where a server's time goes (py-spy stacks by process and activity);
- ``cli``: every benchmark's argument parser.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
