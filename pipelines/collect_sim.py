"""Collect Meta-World expert demonstrations in parallel Ray actors into a LeRobot v3.0 dataset.

    python pipelines/collect_sim.py                                   # 3 tasks x 10 episodes, 64 px, ~1-3 min on 2 CPUs
    python pipelines/collect_sim.py --tasks pick-place-v3 --episodes_per_task 50 --image_size 128
    ray job submit -- python pipelines/collect_sim.py --output /shared/metaworld

Every field of syvla.sim.collect.CollectSimConfig is a flag. A dataset
already made with the same content arguments is reused unless --overwrite true.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common)

import syvla  # noqa: E402,F401  (installs the torchvision shim first, as in every syvla process)
from common import connect_ray  # noqa: E402
from syvla.cli import parse_configs  # noqa: E402
from syvla.sim.collect import CollectSimConfig, check_output, existing_matches  # noqa: E402


def parse_config(argv=None) -> CollectSimConfig:
    return parse_configs(argv, __doc__, CollectSimConfig())


def main(argv=None) -> int:
    cfg = parse_config(argv)
    try:
        check_output(cfg.output)
    except FileExistsError as e:
        raise SystemExit(f"collect_sim.py: --output {e}")
    if not cfg.overwrite and existing_matches(cfg):
        print(f"[collect_sim] {cfg.output} already holds this dataset (same arguments); nothing to do. "
              f"Pass --overwrite true to collect again.")
        return 0
    connect_ray(cfg.address, cfg.num_cpus)
    from syvla.sim.ray_collect import collect

    collect(cfg, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
