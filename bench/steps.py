"""What the multi-step benches share: each step runs a pipeline as a user would (a subprocess in the
project root, its output streaming through), logged once under the bench's name.

    log, run = pipeline_steps("rl_gain")
    run("pipelines/evaluate.py", "--checkpoint", ckpt, ...)
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pipeline_steps(name: str):
    """(log(line), run(*argv)) for the bench `name`."""

    def log(line: str) -> None:
        print(f"[{name}] {line}", flush=True)

    def run(*argv: str) -> None:
        log("$ python " + " ".join(shlex.quote(str(a)) for a in argv))
        t0 = time.time()
        subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, check=True)
        log(f"done in {time.time() - t0:.0f} s")

    return log, run
