"""Shared steps of pipelines/pretrain.py and pipelines/finetune.py: demos, data, train, export.

Kept here so the pipeline scripts stay wiring. Nothing here connects to Ray: the
pipelines do (pipelines/common.py `connect_ray`) before calling `train`.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from syvla.cli import dump_configs, field
from syvla.train.config import TrainConfig


COLLECT_CHOICES = ("auto", "true", "false")
RESOLVED_CONFIG_FILE = "config.yaml"  # storage_path/name/config.yaml: the run's TrainConfig as resolved


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The Meta-World demonstrations a debug run trains on: collected once, prepared once, then reused."""

    tasks: str = field("reach-v3,push-v3,button-press-topdown-v3", "comma-separated Meta-World tasks to collect")
    episodes_per_task: int = field(40, "scripted expert episodes per task")
    image_size: int = field(64, "camera pixels of the collected views (the model resizes per tower)")
    raw: str = field("data/metaworld", "LeRobot v3.0 dataset written by pipelines/collect_sim.py")
    collect: str = field("auto", "collect (or reuse) the raw demos and prepare them into --data.path: true, false "
                                 "(train on --data.path as it is), auto = true unless --data.path is given")
    seed: int = field(0, "collection seed (layouts)")

    def __post_init__(self):
        if self.collect not in COLLECT_CHOICES:
            raise ValueError(f"DemoConfig.collect must be one of {COLLECT_CHOICES}, got {self.collect!r}")

    def wanted(self, data_path_given: bool) -> bool:
        """Whether to collect and prepare demos: asked for, or (auto) no data path was given."""
        return self.collect == "true" or (self.collect == "auto" and not data_path_given)


def check_demo_folders(demos: DemoConfig, prepared: str) -> None:
    """Raise FileExistsError (naming the folder) unless the demo step may write both of its folders:
    `prepared` (--data.path) empty, absent or prepared by this demo step (manifest origin
    DEMO_ORIGIN), and `demos.raw` empty, absent or written by the simulator collector.
    The pipelines call it before connecting to Ray; a user's data is never touched."""
    from syvla.data import prepared as P
    from syvla.sim.collect import check_output

    out = Path(prepared)
    if out.exists() and any(out.iterdir()):
        m = P.read_manifest(out) if P.manifest_path(out).is_file() else None
        if m is None or m.origin != P.DEMO_ORIGIN:
            raise FileExistsError(f"--data.path {out} holds data the demo step did not prepare; it is left as it is. "
                                  f"Train on it with --demos.collect false, or give the demos another --data.path")
    try:
        check_output(demos.raw)
    except FileExistsError as e:
        raise FileExistsError(f"--demos.raw {e}") from None


def model_flags(given: dict) -> dict:
    """The `--model.*` entries of parse_configs' `given` ({dotted field under model: value})."""
    return {k[len("model."):]: v for k, v in given.items() if k.startswith("model.")}


def demo_step(demos: DemoConfig, data_path: str, given: dict) -> bool:
    """Whether the run collects and prepares demos (`demos.wanted`), with `check_demo_folders` done
    when it does; the pipelines call it before connecting to Ray."""
    collect = demos.wanted(data_path_given="data.path" in given)
    if collect:
        check_demo_folders(demos, data_path)
    return collect


def prepare_demos(demos: DemoConfig, prepared: str, chunk_len: int, collect_main) -> Path:
    """Collect (or reuse) the raw demos with the collect_sim pipeline's `main` and prepare them into
    `prepared` (--data.path), unless a prepared copy newer than them exists.

    Writes only where `check_demo_folders` allows, checked before anything is collected.
    """
    from syvla.data import prepared as P
    from syvla.data.prepare import PrepareConfig, prepare

    check_demo_folders(demos, prepared)
    out, raw = Path(prepared), Path(demos.raw)
    manifest = P.manifest_path(out)
    m = P.read_manifest(out) if manifest.is_file() else None
    rc = collect_main(["--tasks", demos.tasks, "--episodes_per_task", str(demos.episodes_per_task),
                       "--image_size", str(demos.image_size), "--output", demos.raw, "--seed", str(demos.seed)])
    if rc:
        raise RuntimeError(f"collect_sim failed with exit code {rc}")
    if m is not None:
        raw_info = raw / "meta" / "info.json"
        fresh = not raw_info.exists() or raw_info.stat().st_mtime <= manifest.stat().st_mtime
        if m.chunk_len == chunk_len and fresh:
            print(f"[train] reusing prepared data {out}", flush=True)
            return out
    prepare(PrepareConfig(inputs=(f"metaworld={raw}",), output=str(out), chunk_len=chunk_len, overwrite=True,
                          origin=P.DEMO_ORIGIN))
    return out


def train(cfg: TrainConfig, model_flags=None):
    """Resolve the model on the driver (syvla.train.embodiments), build the stream and fit.

    `model_flags`: the `--model.*` flags given ({dotted field: value}), checked against the
    checkpoint when fine-tuning. Returns (ray.train.Result, policy dir of its last checkpoint, seconds).
    """
    from syvla.train import ray_train
    from syvla.data.prepared import load_norm_stats
    from syvla.train.data import training_dataset
    from syvla.train.embodiments import resolve_model

    cfg = resolve_model(cfg.with_absolute_paths(), model_flags)
    saved = dump_configs(ray_train.log_dir(cfg).parent / RESOLVED_CONFIG_FILE, cfg)
    print(f"[train] {cfg.name}: embodiments " + ", ".join(
        f"{e.name} (state {e.state_dim}, action {e.action_dim}, cameras {list(e.cameras)})"
        for e in cfg.model.embodiments) + (f"; keeping tasks {list(cfg.data.tasks)} (--data.tasks)"
                                            if cfg.data.tasks else "; every task (--data.tasks is empty)"), flush=True)
    stats = load_norm_stats(cfg.data.path)
    ds, sizes = training_dataset(cfg.data, seed=cfg.seed)
    print(f"[train] {cfg.name}: {cfg.stage} on {sizes} rows, {cfg.max_steps} steps x {cfg.global_batch_size} "
          f"samples on {cfg.scale.num_workers} worker(s); resolved config -> {saved} (--config reruns it)", flush=True)
    t0 = time.time()
    result = ray_train.fit(cfg, {"train": ds}, stats)
    if result.error is not None:
        raise RuntimeError(f"training run {cfg.name} failed: {result.error}")
    return result, ray_train.policy_checkpoint(result), time.time() - t0


def check_export_destination(dest: str | Path) -> Path:
    """`dest` if the final policy may go there: absent, an empty folder, or a policy checkpoint (replaced).

    Anything else (a user's folder, a file) raises FileExistsError; the pipelines call this before
    training, so a run never ends unable to save its result.
    """
    from syvla.model.checkpoint import is_checkpoint_dir

    dest = Path(dest)
    if dest.exists() and not (is_checkpoint_dir(dest) or (dest.is_dir() and not any(dest.iterdir()))):
        raise FileExistsError(f"{dest} exists and is not a policy checkpoint: refusing to replace it; "
                              f"choose another destination")
    return dest


def export_policy(policy_dir: Path, dest: str | Path) -> Path:
    """Copy the final policy checkpoint to `dest`, replacing only a policy checkpoint already there."""
    dest = check_export_destination(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(policy_dir, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
