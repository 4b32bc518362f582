"""Fine-tune a pretrained SyVLA checkpoint on one task's demos (Ray Train + DeepSpeed ZeRO-2).

    python pipelines/finetune.py --data.tasks reach-v3              # debug: reach-v3 from checkpoints/pretrain/pretrain-debug
    python pipelines/finetune.py --init_from CKPT --data.path P     # a new robot prepared at P: its embodiment is added
    python pipelines/finetune.py --data.tasks reach-v3 push-v3      # one run per task: finetune-debug-reach-v3, ...
    python pipelines/finetune.py --per_task false --data.tasks reach-v3 push-v3   # one run on both tasks
    python pipelines/finetune.py --preset finetune-paper --init_from /ckpt/pretrain --data.path /data/prepared/tasks
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python pipelines/finetune.py

The model (and its normalization statistics) come from --init_from, plus the robots of
--data.path it lacks (their embodiments are read from the prepared manifest); the stream keeps
the rows of the run's task(s), or every row when --data.tasks is empty (the default). Each run's final policy is copied to checkpoints/finetune/<run name>/.
Re-running the same command resumes each run from its newest checkpoint. --address picks the
Ray cluster ("" = $RAY_ADDRESS, else a new local instance).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common, collect_sim)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the syvla package when run from anywhere

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from common import RayConfig, connect_ray  # noqa: E402
from syvla.cli import field, parse_configs  # noqa: E402
from syvla.train import pipeline  # noqa: E402
from syvla.train.config import PRESETS  # noqa: E402


@dataclasses.dataclass(frozen=True)
class FinetuneRunConfig:
    per_task: bool = field(True, "one fine-tuning run per task of --data.tasks (named <name>-<task>)")
    out_dir: str = field("checkpoints/finetune", "final policies go to OUT_DIR/<run name>")


def main(argv=None) -> int:
    given: dict = {}
    cfg, run_cfg, ray_cfg, demos = parse_configs(argv, __doc__, FinetuneRunConfig(), RayConfig(),
                                                 ("demos", pipeline.DemoConfig()), presets=PRESETS,
                                                 preset="finetune-debug", given=given)
    model_flags = pipeline.model_flags(given)
    if cfg.stage != "finetune" or not cfg.init_from:
        raise SystemExit("finetune.py needs a finetune preset and --init_from (a pretraining policy checkpoint)")
    from syvla.model.checkpoint import is_checkpoint_dir, read_config
    from syvla.model.transfer import check_finetune_overrides

    if not is_checkpoint_dir(cfg.init_from):
        raise SystemExit(f"--init_from {cfg.init_from} is not a policy checkpoint: run pipelines/pretrain.py first")
    checkpoint_model = read_config(cfg.init_from)
    try:
        check_finetune_overrides(model_flags, checkpoint_model)
    except ValueError as e:
        raise SystemExit(f"finetune.py: {e}")
    chunk_len = checkpoint_model.expert.chunk_len
    groups = [(t,) for t in cfg.data.tasks] if run_cfg.per_task and cfg.data.tasks else [cfg.data.tasks]
    runs = [dataclasses.replace(cfg, name=f"{cfg.name}-{tasks[0]}" if run_cfg.per_task and tasks else cfg.name,
                                data=dataclasses.replace(cfg.data, tasks=tasks)) for tasks in groups]
    try:
        for run in runs:
            pipeline.check_export_destination(Path(run_cfg.out_dir) / run.name)
    except FileExistsError as e:
        raise SystemExit(f"finetune.py: --out_dir {e}")
    try:
        collect = pipeline.demo_step(demos, cfg.data.path, given)
    except FileExistsError as e:
        raise SystemExit(f"finetune.py: {e}")
    connect_ray(ray_cfg.address, ray_cfg.num_cpus)
    if collect:
        import collect_sim

        try:
            pipeline.prepare_demos(demos, cfg.data.path, chunk_len, collect_sim.main)
        except FileExistsError as e:
            raise SystemExit(f"finetune.py: {e}")
    for run in runs:
        tasks = run.data.tasks
        try:
            result, policy_dir, seconds = pipeline.train(run, model_flags)
        except (ValueError, KeyError, FileNotFoundError) as e:  # config and data errors, found before any worker
            raise SystemExit(f"finetune.py: {e.args[0] if isinstance(e, KeyError) and e.args else e}")
        dest = pipeline.export_policy(policy_dir, Path(run_cfg.out_dir) / run.name)
        m = result.metrics or {}
        print(f"[finetune] {run.name} on {list(tasks) or 'all tasks'}: step {m.get('step')} in {seconds:.0f} s, "
              f"action loss {m.get('action_loss', float('nan')):.4f}, {m.get('samples_per_s', float('nan')):.1f} "
              f"samples/s; policy -> {dest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
