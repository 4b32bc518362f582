"""Expert collection on Ray: `EpisodeCollector` actors in parallel, one ordered writer in the driver.

The Ray wrapper of syvla.sim.collect (`collect_local` is the same without Ray).
No ray.init here: the caller (pipelines/collect_sim.py) connects first.
"""

from __future__ import annotations

import time
from typing import Iterator

import pyarrow as pa
import ray

from syvla.sim.collect import CollectSimConfig, EpisodeCollector, EpisodeSpec, episode_plan, write_episodes


def _finished(refs: dict) -> Iterator[tuple[EpisodeSpec, pa.Table]]:
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield refs[done[0]], ray.get(done[0])


def collect(cfg: CollectSimConfig, log=print) -> dict:
    """Collect cfg's episodes on `cfg.workers` actors (0 = one per CPU Ray reports) into cfg.output.

    Returns {"frames", "episodes", "seconds", "summary"}; logs the plan, one line per episode and a total.
    """
    specs = episode_plan(cfg)
    n_workers = min(len(specs), cfg.workers or max(1, int(ray.available_resources().get("CPU", 1))))
    log(f"[collect_sim] {len(specs)} episodes of {cfg.task_list} at {cfg.image_size} px on {n_workers} workers "
        f"-> {cfg.output}")
    Collector = ray.remote(num_cpus=1)(EpisodeCollector)
    workers = [Collector.remote(cfg.image_size, cfg.view_list, cfg.max_steps, cfg.tail_steps, cfg.rest_steps)
               for _ in range(n_workers)]
    start = time.time()
    try:
        # Contiguous blocks of the task-grouped plan per worker: each env is built about once.
        block = -(-len(specs) // n_workers)
        refs = {workers[i // block].run.remote(spec): spec for i, spec in enumerate(specs)}
        writer, progress = write_episodes(cfg, _finished(refs), len(specs), log)
    finally:
        for w in workers:
            ray.kill(w)
    out = {"frames": writer.total_frames, "episodes": len(writer.episodes), "seconds": time.time() - start,
           "summary": progress.summary()}
    log(f"[collect_sim] wrote {out['frames']} frames, {out['episodes']} episodes to {cfg.output} "
        f"in {out['seconds']:.1f} s; {out['summary']}")
    return out
