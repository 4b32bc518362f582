"""Pretrain SyVLA with Ray Train + DeepSpeed ZeRO-2 on Meta-World expert demos.

    python pipelines/pretrain.py                         # debug preset: collect/reuse demos, prepare, train on 2 CPUs
    python pipelines/pretrain.py --max_steps 200 --scale.num_workers 1
    python pipelines/pretrain.py --preset pretrain-paper --data.path /data/prepared/mix --model.vlm.source /models/qwen
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python pipelines/pretrain.py
    cluster/local_job.sh pipelines/pretrain.py          # the same against a local `ray start --head`

Every TrainConfig field is a flag (--optim.peak_lr, --model.expert.width, ...); the demo
set is --demos.* (tasks, episodes_per_task, image_size, raw, collect); --address picks the
Ray cluster ("" = $RAY_ADDRESS, else a new local instance). Re-running the same
command (same --name and --storage_path) resumes the run from its newest checkpoint.
The final policy is copied to checkpoints/pretrain/<name>/ (or --out).
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
class ExportConfig:
    out: str = field("", "where to copy the final policy; '' = checkpoints/pretrain/<name>")


def main(argv=None) -> int:
    given: dict = {}
    cfg, export, ray_cfg, demos = parse_configs(argv, __doc__, ExportConfig(), RayConfig(),
                                                ("demos", pipeline.DemoConfig()), presets=PRESETS,
                                                preset="pretrain-debug", given=given)
    model_flags = pipeline.model_flags(given)
    if cfg.stage != "pretrain":
        raise SystemExit(f"pretrain.py runs stage 'pretrain', the preset has {cfg.stage!r}")
    dest = export.out or Path("checkpoints") / "pretrain" / cfg.name
    try:
        pipeline.check_export_destination(dest)
    except FileExistsError as e:
        raise SystemExit(f"pretrain.py: --out {e}")
    try:
        collect = pipeline.demo_step(demos, cfg.data.path, given)
    except FileExistsError as e:
        raise SystemExit(f"pretrain.py: {e}")
    connect_ray(ray_cfg.address, ray_cfg.num_cpus)
    if collect:
        import collect_sim

        try:
            pipeline.prepare_demos(demos, cfg.data.path, cfg.model.expert.chunk_len, collect_sim.main)
        except FileExistsError as e:
            raise SystemExit(f"pretrain.py: {e}")
    try:
        result, policy_dir, seconds = pipeline.train(cfg, model_flags)
    except (ValueError, KeyError, FileNotFoundError) as e:  # config and data errors, found before any worker
        raise SystemExit(f"pretrain.py: {e.args[0] if isinstance(e, KeyError) and e.args else e}")
    dest = pipeline.export_policy(policy_dir, dest)
    m = result.metrics or {}
    print(f"[pretrain] {cfg.name}: step {m.get('step')} in {seconds:.0f} s, action loss {m.get('action_loss', float('nan')):.4f}, "
          f"{m.get('samples_per_s', float('nan')):.1f} samples/s; policy -> {dest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
