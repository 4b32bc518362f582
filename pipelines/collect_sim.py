"""Collect Meta-World expert demonstrations in parallel Ray actors into a LeRobot v3.0 dataset.

    python pipelines/collect_sim.py                                   # 3 tasks x 10 episodes, 64 px, ~1-3 min on 2 CPUs
    python pipelines/collect_sim.py --tasks pick-place-v3 --episodes_per_task 50 --image_size 128
    ray job submit -- python pipelines/collect_sim.py --output /shared/metaworld

Every field of syvla.data.sim_collect.CollectSimConfig is a flag. A dataset
already made with the same content arguments is reused unless --overwrite true.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common)

import syvla  # noqa: E402,F401  (installs the torchvision shim first, as in every syvla process)
from common import connect_ray  # noqa: E402
from syvla.cli import parse_configs  # noqa: E402
from syvla.data.sim_collect import (  # noqa: E402
    CollectSimConfig, EpisodeCollector, OrderedSink, Progress, episode_plan, existing_matches, open_writer)


def parse_config(argv=None) -> CollectSimConfig:
    return parse_configs(argv, __doc__, CollectSimConfig())


def main(argv=None) -> int:
    cfg = parse_config(argv)
    if not cfg.overwrite and existing_matches(cfg):
        print(f"[collect_sim] {cfg.output} already holds this dataset (same arguments); nothing to do. "
              f"Pass --overwrite true to collect again.")
        return 0
    ray = connect_ray(cfg.address, cfg.num_cpus)
    specs = episode_plan(cfg)
    n_workers = min(len(specs), cfg.workers or max(1, int(ray.available_resources().get("CPU", 1))))
    print(f"[collect_sim] {len(specs)} episodes of {cfg.task_list} at {cfg.image_size} px on {n_workers} workers "
          f"-> {cfg.output}", flush=True)
    Collector = ray.remote(num_cpus=1)(EpisodeCollector)
    workers = [Collector.remote(cfg.image_size, cfg.view_list, cfg.max_steps) for _ in range(n_workers)]
    # Contiguous blocks of the task-grouped plan per worker: each env is built about once.
    block = -(-len(specs) // n_workers)
    refs = {workers[i // block].run.remote(spec): spec for i, spec in enumerate(specs)}
    progress = Progress(len(specs), log=lambda line: print(line, flush=True))
    start = time.time()
    with open_writer(cfg) as writer:
        sink = OrderedSink(writer)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            table = ray.get(done[0])
            progress.update(refs[done[0]], table)
            sink.add(table)
    for w in workers:
        ray.kill(w)
    print(f"[collect_sim] wrote {writer.total_frames} frames, {len(writer.episodes)} episodes to {cfg.output} "
          f"in {time.time() - start:.1f} s; {progress.summary()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
