"""One benchmark run in a fresh Python process, from this checkout or from another one.

A fresh process per run keeps one library from warming the other's caches. `checkout` runs an older
rlfoundry beside the current one: make it with `git worktree add /tmp/before REV`, pass
`--baseline /tmp/before` to a benchmark script, and its runs alternate with the others' as library
"baseline" (its own copy of the script runs with its rlfoundry first on the path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# This checkout's rlfoundry first on the path: make setup's editable install points at the checkout
# that made the venv, so a benchmark run from another worktree (a snapshot of HEAD, say) that shares
# the venv would otherwise measure that checkout's code. Every benchmark script imports this module
# before rlfoundry.
CHECKOUT = Path(__file__).resolve().parent.parent
if str(CHECKOUT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT))


def run_worker(script: str, arguments: list[str], checkout: str | None = None) -> dict:
    """The JSON line that `script --worker ...` prints last, run in a new process; with `checkout`,
    that checkout's script of the same name and its rlfoundry."""
    path, environment, directory = Path(script), None, None
    if checkout is not None:
        root = Path(checkout).resolve()
        path = root / "benchmarks" / path.name
        if not path.is_file():
            raise SystemExit(f"--baseline {checkout}: no {path}; pass the root of an rlfoundry checkout")
        inherited = os.environ.get("PYTHONPATH")
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), inherited]))}
        directory = root
    output = subprocess.run(
        [sys.executable, str(path), *arguments], check=True, capture_output=True, text=True, env=environment, cwd=directory
    ).stdout
    return json.loads(output.strip().splitlines()[-1])
