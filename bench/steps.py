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


def build_finetuned(run, work: Path, task: str, demos: int, pretrain_steps: int, finetune_steps: int,
                    small=(), raw: Path | None = None, variant: str = "", flags=()) -> Path:
    """The debug policy the RL and real-time benches start from, built once under `work` (skipped when it
    exists): `demos` scripted demos of `task`, pretraining, then fine-tuning on the task. `variant` names
    another fine-tuning of the same pretraining with extra finetune.py `flags`."""
    from syvla.model.checkpoint import is_checkpoint_dir

    raw = raw or work / "raw"
    base = work / "finetuned" / (f"rl-gain-{task}" + (f"-{variant}" if variant else ""))
    pretrained = work / "pretrained"
    if not is_checkpoint_dir(pretrained):
        run("pipelines/pretrain.py", "--name", "rl-gain-pretrain", "--storage_path", str(work / "runs"),
            "--demos.collect", "true", "--demos.raw", str(raw), "--demos.tasks", task,
            "--demos.episodes_per_task", str(demos), "--data.path", str(work / "prepared"),
            "--max_steps", str(pretrain_steps), "--out", str(pretrained), *small)
    if not is_checkpoint_dir(base):
        run("pipelines/finetune.py", "--init_from", str(pretrained), "--data.path", str(work / "prepared"),
            "--data.tasks", task, "--per_task", "false", "--name", base.name,
            "--storage_path", str(work / "runs"), "--out_dir", str(base.parent),
            "--max_steps", str(finetune_steps), *small, *flags)
    return base
