"""The benchmarks. Each module asks one question and is run from the repository root as
``python -m bench.<module> --help``; ``bench.harness`` holds what they share. Their results and how to rerun
them are in bench/README.md."""
