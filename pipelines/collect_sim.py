"""Collect Meta-World expert demonstrations in parallel Ray actors into a LeRobot v3.0 dataset.

    python pipelines/collect_sim.py                                   # 3 tasks x 10 episodes, 64 px, ~1-3 min on 2 CPUs
    python pipelines/collect_sim.py --tasks pick-place-v3 --episodes_per_task 50 --image_size 128
    ray job submit -- python pipelines/collect_sim.py --output /shared/metaworld

Every field of syvla.data.sim_collect.CollectSimConfig is a flag. A dataset
already made with the same content arguments is reused unless --overwrite true.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import typing

import syvla  # noqa: F401  (installs the torchvision shim first, as in every syvla process)
from syvla.data.sim_collect import (CollectSimConfig, EpisodeCollector, OrderedSink, Progress, episode_plan,
                                    existing_matches, open_writer)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_config(argv=None) -> CollectSimConfig:
    """argparse generated from the dataclass: one --flag per field, defaults from the dataclass."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(CollectSimConfig)
    for f in dataclasses.fields(CollectSimConfig):
        tp = hints[f.name]
        parser.add_argument(f"--{f.name}", type=_bool if tp is bool else tp, default=f.default,
                            metavar="BOOL" if tp is bool else None, help=f"(default: {f.default!r})")
    try:
        return CollectSimConfig(**vars(parser.parse_args(argv)))
    except ValueError as e:
        parser.error(str(e))


def connect(cfg: CollectSimConfig):
    import ray

    if not ray.is_initialized():
        address = cfg.address or os.environ.get("RAY_ADDRESS", "")
        if address:
            ray.init(address=address)  # an existing cluster, e.g. under `ray job submit`
        else:
            ray.init(num_cpus=cfg.num_cpus, include_dashboard=False)
    return ray


def main(argv=None) -> int:
    cfg = parse_config(argv)
    if not cfg.overwrite and existing_matches(cfg):
        print(f"[collect_sim] {cfg.output} already holds this dataset (same arguments); nothing to do. "
              f"Pass --overwrite true to collect again.")
        return 0
    ray = connect(cfg)
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
