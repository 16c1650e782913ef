"""Test-only failpoints: with ``ICL_FAILPOINT=<name>`` the process kills itself (SIGKILL, as ``kill -9``
would) when it reaches the point of that name. The crash tests use them to die inside a window a random
kill would mostly miss. Unset, a failpoint costs one environment lookup.

Points: ``upload-commit`` (an upload's rows written to the database, its transaction not yet committed)."""

from __future__ import annotations

import os
import signal


def reach(name: str) -> None:
    if os.environ.get("ICL_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
