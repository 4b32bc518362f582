"""Benchmark prepare_data on Ray (2 CPUs) against a single-process pandas implementation of the same steps,
and the trainer-side data wait when streaming the chunked dataset into a torch training loop.

    python bench/data_pipeline.py                       # ~3-5 min on 2 CPUs
    python bench/data_pipeline.py --episodes 20 --frames 40 --train_steps 20   # quick look

1. Generates a Meta-World-like dataset in the collector's format (LeRobot v3.0, h264 video, 3 views;
   syvla.data.synthetic episodes) under --data_dir, with a few planted defects, reused when present.
2. Ray: syvla.data.prepare.prepare (read -> clean -> chunk -> write shards -> statistics) on a local
   Ray with --num_cpus CPUs; the Ray start itself is not timed (a cluster is up before jobs run).
3. pandas: the same steps in one process (pandas DataFrame/groupby for the data handling, the library's
   per-episode numpy functions for the math, so both produce the same rows: checked).
4. Streams the prepared shards through decode/resize in Ray Data into iter_torch_batches feeding a
   small conv-net training loop, and prints the time the trainer waits for data as a share of step time.
Ray and pandas runs alternate `--repeats` times (other processes on a shared machine load both alike);
each Ray run starts a fresh local Ray (not timed) so it pays worker start-up like a new job.
Last line: ``data_pipeline_speedup: X`` (best Ray frames/s over best pandas frames/s).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import syvla  # noqa: F401  (torchvision shim before anything imports torchvision)
from syvla import constants as K
from syvla.data import cleaning as C
from syvla.data import prepared
from syvla.data.chunking import PREPARED_SCHEMA, chunk_actions
from syvla.data.readers import read_dataset
from syvla.normalize import DatasetStats, FeatureStats, NormStats

NAME = "bench"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    episodes: int = 48  # episodes in the generated dataset
    frames: int = 80  # frames per episode
    image_size: int = 64  # px, 3 views (as collect_sim's default)
    data_dir: str = ""  # where the generated dataset lives ("" = a temp dir, removed afterwards)
    num_cpus: int = 2
    block_frames: int = 400  # frames per Ray read task
    train_steps: int = 60  # steps of the streaming training loop
    batch_size: int = 32
    train_image_size: int = 64  # px fed to the toy model
    warmup_steps: int = 3  # first steps (pipeline start) left out of the wait share
    repeats: int = 2  # alternating Ray/pandas runs; the speedup compares the best of each


def generate(cfg: BenchConfig, path: Path) -> None:
    from syvla.data.lerobot import LeRobotWriteOptions, write_lerobot
    from syvla.data.synthetic import synthetic_episode

    if (path / "meta" / "info.json").exists():
        return
    print(f"generating {cfg.episodes} episodes x {cfg.frames} frames at {cfg.image_size} px -> {path}", flush=True)

    def episodes():
        for i in range(cfg.episodes):
            ep = synthetic_episode(i, cfg.frames, dataset=NAME, image_size=cfg.image_size, seed=1,
                                   success=i % 16 != 5)  # a few failed episodes to drop
            if i % 16 == 9:  # and a few duplicates
                ep = synthetic_episode(i - 1, cfg.frames, dataset=NAME, image_size=cfg.image_size, seed=1)
                ep = ep.set_column(1, ep.schema.field(K.EPISODE_ID), pa.array([i] * cfg.frames))
            yield ep

    write_lerobot(episodes(), path, LeRobotWriteOptions(video=True, codec="h264"))


# ---- the single-process pandas implementation ----------------------------------------
def pandas_prepare(path: Path, out: Path, ccfg: C.CleaningConfig, chunk_len: int) -> tuple[int, int, NormStats]:
    df = pd.concat([t.to_pandas() for t in read_dataset(path, name=NAME)], ignore_index=True)
    # summaries per episode, then the same decisions as the Ray path
    rows, kept_actions = [], []
    for (dataset, ep), g in df.groupby([K.DATASET, K.EPISODE_ID], sort=True):
        g = g.sort_values(K.FRAME_INDEX)
        state, action = np.stack(g[K.STATE].to_numpy()), np.stack(g[K.ACTION].to_numpy())
        status = [{C.image_status(b, ccfg.black_max_value) for b in imgs} for imgs in g[K.IMAGES]]
        finite = np.isfinite(state).all(1) & np.isfinite(action).all(1)
        lo, hi, interior, all_idle = C.idle_bounds(state, action, ccfg)
        known = g[K.SUCCESS].dropna()
        rows.append({K.DATASET: dataset, K.EPISODE_ID: ep, K.KIND: g[K.KIND].iloc[0], "n_frames": len(g),
                     "nonfinite_frames": int((~finite).sum()), "image_frames_checked": len(g),
                     "black_frames": sum(C.BLACK in s and C.UNDECODABLE not in s for s in status),
                     "undecodable_frames": sum(C.UNDECODABLE in s for s in status),
                     K.SUCCESS: bool(known.iloc[-1]) if len(known) else None, "all_idle": all_idle,
                     "trim_start": lo, "trim_stop": hi, "interior_idle_frames": interior,
                     "seq_hash": C._sequence_hash(state, action), "action_dim": action.shape[1], "read_error": None})
        kept_actions.append(action[lo:hi][finite[lo:hi]].reshape(-1))
    summaries = pa.Table.from_pandas(pd.DataFrame(rows).assign(kept_actions=kept_actions), schema=C.SUMMARY_SCHEMA,
                                     preserve_index=False)
    decisions, report = C.decide(summaries, ccfg)
    dec = decisions.to_pandas()
    df = df.merge(dec[dec["keep"]][[K.DATASET, K.EPISODE_ID, "trim_start", "trim_stop"]], on=[K.DATASET, K.EPISODE_ID])
    df = df[(df[K.FRAME_INDEX] >= df["trim_start"]) & (df[K.FRAME_INDEX] < df["trim_stop"])]
    df = df.sort_values([K.DATASET, K.EPISODE_ID, K.FRAME_INDEX]).reset_index(drop=True)
    df[K.TIMESTAMP] -= df.groupby(K.EPISODE_ID)[K.TIMESTAMP].transform("first")
    df[K.FRAME_INDEX] -= df["trim_start"]
    chunks, masks = [], []
    for _, g in df.groupby(K.EPISODE_ID, sort=True):
        a, m = chunk_actions(np.stack(g[K.ACTION].to_numpy()), chunk_len)
        chunks += [list(x) for x in a]  # [chunk][dim]: pyarrow converts nested lists, not 2-D arrays
        masks += list(m)
    df[K.ACTIONS], df[K.ACTION_MASK] = chunks, masks
    state, action = np.stack(df[K.STATE].to_numpy()), np.stack(df[K.ACTION].to_numpy())
    stats = NormStats({NAME: DatasetStats(FeatureStats.from_array(state), FeatureStats.from_array(action))})
    (out / NAME).mkdir(parents=True, exist_ok=True)
    df[list(PREPARED_SCHEMA.names)].to_parquet(out / NAME / prepared.shard_name(0), schema=PREPARED_SCHEMA, index=False)
    stats.save(prepared.norm_stats_path(out))
    return report.total("frames_in"), report.total("frames_out"), stats


# ---- the streaming training loop --------------------------------------------------------
def train_wait_share(ray, prepared: Path, cfg: BenchConfig) -> tuple[float, float]:
    import torch
    from torch import nn

    from syvla.data.stream import read_prepared, to_tensor_batches

    torch.manual_seed(0)
    torch.set_num_threads(1)  # one core for the trainer, the other for Ray Data
    ds = to_tensor_batches(read_prepared(prepared)[NAME].randomize_block_order(seed=0),
                           cfg.train_image_size, batch_size=cfg.batch_size, num_tasks=1)
    cols = {"images": torch.uint8, "state": torch.float32, "actions": torch.float32, "action_mask": torch.bool}
    it = iter(ds.select_columns(list(cols)).iter_torch_batches(batch_size=cfg.batch_size, dtypes=cols,
                                                             prefetch_batches=4, drop_last=True))
    vision = nn.Sequential(nn.Conv2d(3, 32, 5, 2, 2), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                           nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = None
    opt = None
    wait = busy = 0.0
    for step in range(cfg.train_steps + cfg.warmup_steps):
        t0 = time.perf_counter()
        try:
            b = next(it)
        except StopIteration:
            print(f"  stream ended after {step} steps", flush=True)
            break
        t1 = time.perf_counter()
        imgs = b["images"].flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0  # [B*V, 3, h, w]
        feats = vision(imgs).view(b["images"].shape[0], -1)
        if head is None:
            out_dim = b["actions"][0].numel()
            head = nn.Sequential(nn.Linear(feats.shape[1] + b["state"].shape[1], 256), nn.ReLU(), nn.Linear(256, out_dim))
            opt = torch.optim.AdamW(list(vision.parameters()) + list(head.parameters()), lr=1e-3)
        pred = head(torch.cat([feats, b["state"]], 1)).view_as(b["actions"])
        err = ((pred - b["actions"]) ** 2).mean(-1)
        loss = (err * b["action_mask"]).sum() / b["action_mask"].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if step >= cfg.warmup_steps:
            wait += t1 - t0
            busy += t2 - t1
    return wait / max(wait + busy, 1e-9), (wait + busy) / max(cfg.train_steps, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(BenchConfig):
        p.add_argument(f"--{f.name}", type=type(f.default), default=f.default, help=f"(default: {f.default!r})")
    cfg = BenchConfig(**vars(p.parse_args(argv)))
    work = Path(tempfile.mkdtemp(prefix="syvla_bench_"))
    data = Path(cfg.data_dir) if cfg.data_dir else work / "data"
    try:
        t = time.time()
        generate(cfg, data)
        print(f"dataset ready in {time.time() - t:.1f} s", flush=True)

        import ray

        from syvla.data.prepare import PrepareConfig, prepare

        ray_times, pd_times = [], []
        for rep in range(cfg.repeats):  # alternate the two so that load from other processes hits both alike
            # A fresh local instance per run: every Ray run pays its workers' start and imports, as a new job does.
            # address="local": never some other local cluster found under /tmp/ray.
            ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = False
            pcfg = PrepareConfig(inputs=(f"{NAME}={data}",), output=str(work / "ray"), block_frames=cfg.block_frames,
                                 overwrite=True)
            result = prepare(pcfg)
            ray_times.append(result.seconds)
            print(f"run {rep}: ray    ({cfg.num_cpus} CPUs): {result.frames_in} frames in {result.seconds:.1f} s = "
                  f"{result.frames_in / result.seconds:.0f} frames/s ({result.frames_out} kept)", flush=True)
            if rep == cfg.repeats - 1:
                share, step_s = train_wait_share(ray, work / "ray", cfg)
            ray.shutdown()
            shutil.rmtree(work / "pandas", ignore_errors=True)
            t = time.time()
            frames_in, frames_out, pd_stats = pandas_prepare(data, work / "pandas", pcfg.cleaning, pcfg.chunk_len)
            pd_times.append(time.time() - t)
            print(f"run {rep}: pandas (1 process): {frames_in} frames in {pd_times[-1]:.1f} s = "
                  f"{frames_in / pd_times[-1]:.0f} frames/s ({frames_out} kept)", flush=True)
        same_rows = pq.read_table(work / "ray" / NAME).sort_by([(K.EPISODE_ID, "ascending"), (K.FRAME_INDEX, "ascending")]) \
            .equals(pq.read_table(work / "pandas" / NAME))
        same_stats = all(np.allclose(getattr(getattr(result.norm_stats[NAME], f), s), getattr(getattr(pd_stats[NAME], f), s),
                                     atol=1e-9) for f in ("state", "action") for s in ("mean", "std", "q01", "q99"))
        print(f"outputs identical: rows {same_rows}, statistics {same_stats}", flush=True)
        print(result.report.table(), flush=True)
        print(f"trainer data wait: {100 * share:.1f}% of step time ({step_s * 1e3:.0f} ms/step, batch {cfg.batch_size}, "
              f"goal < 5%)", flush=True)
        ray_fps, pd_fps = frames_in / min(ray_times), frames_in / min(pd_times)
        print(f"prepare_data frames/s, best of {cfg.repeats}: ray {ray_fps:.0f} ({cfg.num_cpus} CPUs), pandas {pd_fps:.0f}; "
              f"first runs: {frames_in / ray_times[0] / (frames_in / pd_times[0]):.2f}x", flush=True)
        print(f"data_pipeline_speedup: {ray_fps / pd_fps:.2f}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
