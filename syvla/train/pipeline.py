"""Shared steps of pipelines/pretrain.py and pipelines/finetune.py: demos, data, train, export.

Kept here so the pipeline scripts stay wiring. Nothing here connects to Ray: the
pipelines do (pipelines/common.py `connect_ray`) before calling `train`.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from syvla.cli import field
from syvla.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The Meta-World demonstrations a debug run trains on: collected once, prepared once, then reused."""

    tasks: str = field("reach-v3,push-v3,button-press-topdown-v3", "comma-separated Meta-World tasks to collect")
    episodes_per_task: int = field(40, "scripted expert episodes per task")
    image_size: int = field(64, "camera pixels of the collected views (the model resizes per tower)")
    raw: str = field("data/metaworld", "LeRobot v3.0 dataset written by pipelines/collect_sim.py")
    collect: bool = field(True, "collect (or reuse) the raw demos and prepare them into --data.path; "
                                "false = train on --data.path as it is")
    seed: int = field(0, "collection seed (layouts)")


def ensure_demos(demos: DemoConfig, collect_main) -> Path:
    """Collect the raw demos with the collect_sim pipeline's `main` (it reuses a matching dataset)."""
    if demos.collect:
        rc = collect_main(["--tasks", demos.tasks, "--episodes_per_task", str(demos.episodes_per_task),
                           "--image_size", str(demos.image_size), "--output", demos.raw, "--seed", str(demos.seed)])
        if rc:
            raise RuntimeError(f"collect_sim failed with exit code {rc}")
    return Path(demos.raw)


def ensure_prepared(demos: DemoConfig, prepared: str, chunk_len: int) -> Path:
    """Clean + chunk the raw demos into `prepared` (--data.path), unless a prepared copy newer than them exists."""
    from syvla.data import prepared as P
    from syvla.data.prepare import PrepareConfig, prepare

    out, raw = Path(prepared), Path(demos.raw)
    manifest = P.manifest_path(out)
    if manifest.exists():
        m = P.read_manifest(out)
        raw_info = raw / "meta" / "info.json"
        fresh = not raw_info.exists() or raw_info.stat().st_mtime <= manifest.stat().st_mtime
        if m.chunk_len == chunk_len and fresh:
            print(f"[train] reusing prepared data {out}", flush=True)
            return out
    if not demos.collect and manifest.exists():
        return out
    prepare(PrepareConfig(inputs=(f"metaworld={raw}",), output=str(out), chunk_len=chunk_len, overwrite=True))
    return out


def train(cfg: TrainConfig):
    """Build the stream and fit; returns (ray.train.Result, policy dir of its last checkpoint, seconds)."""
    from syvla.train import ray_train
    from syvla.data.prepared import load_norm_stats
    from syvla.train.data import training_dataset

    stats = load_norm_stats(cfg.data.path)
    ds, sizes = training_dataset(cfg.data, seed=cfg.seed)
    print(f"[train] {cfg.name}: {cfg.stage} on {sizes} rows, {cfg.max_steps} steps x {cfg.global_batch_size} "
          f"samples on {cfg.scale.num_workers} worker(s); run dir {ray_train.run_dir(cfg)}", flush=True)
    t0 = time.time()
    result = ray_train.fit(cfg, {"train": ds}, stats)
    if result.error is not None:
        raise RuntimeError(f"training run {cfg.name} failed: {result.error}")
    return result, ray_train.policy_checkpoint(result), time.time() - t0


def export_policy(policy_dir: Path, dest: str | Path) -> Path:
    """Copy the final policy checkpoint to `dest` (replaced atomically enough for a local disk)."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(policy_dir, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
