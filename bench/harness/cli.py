"""Every benchmark's command line: its docstring as help, its name as ``python -m bench.<name>`` runs it."""

from __future__ import annotations

import argparse


def argument_parser(doc: str | None, module: str) -> argparse.ArgumentParser:
    """``module``: the benchmark's ``__spec__.name``, e.g. "bench.eval_http"."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
