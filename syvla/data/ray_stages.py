"""Ray Data stages over the pure per-batch functions of syvla.data (the only Ray code in syvla/data).

Nothing here calls ``ray.init``: the caller (a pipeline, a test fixture, a
trainer) connects first.

Cleaning and chunking need whole episodes in one batch, and Ray re-cuts blocks
as it sees fit. So :func:`prepare` runs its per-episode steps *inside* the read
tasks, where episodes are whole by construction, in two passes per input:

1. read units in parallel (LeRobot: groups of episodes, each task with its own
   reader and video decoder), cache each whole-episode block as parquet under
   ``<output>/.cache`` and return only its episode summaries (image checks run here);
2. decide in the driver (dataset-wide median/MAD outliers, duplicates), then clean,
   convert the action representation and chunk each cached file in parallel; each
   task writes its parquet shard (``<output>/<dataset>/part-NNNNN.parquet``) and
   returns the statistics partials of what it wrote (syvla.data.stats).

Then the partials merge into ``norm_stats.json`` (moments merged with
``syvla.normalize.merge_moments``; quantiles exact up to ``max_quantile_frames``
frames per dataset, else from a hash-chosen uniform sample), and
``cleaning_report.json`` and ``manifest.json`` are written. :func:`compute_norm_stats`
does the same statistics over any Ray Dataset.
The cache needs storage every Ray node can reach when the cluster has several.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from syvla import constants as K
from syvla.data import actions as act
from syvla.data.chunking import DEFAULT_CHUNK_LEN, PREPARED_SCHEMA, add_chunks, tensor_batch
from syvla.data.cleaning import (SUMMARY_SCHEMA, CleaningConfig, CleaningReport, apply_decisions, decide,
                                 decision_lookup, summarize_episodes)
from syvla.data.columns import combine, episode_bounds, list_column, vectors
from syvla.data.mixture import MIXTURE_PASS, MIXTURE_SOURCE, plan_mixture
from syvla.data.stats import STATS_COLUMNS, merge_partial_stats, partial_stats, robot_counts, sample_fractions
from syvla.normalize import NormStats

REPORT_FILE = "cleaning_report.json"
MANIFEST_FILE = "manifest.json"
CACHE_DIR = ".cache"  # pass-1 copies of the raw episodes under the output, removed when done
ACTION_REPRESENTATIONS = ("native", "eef_relative")


def _log(msg: str) -> None:
    print(f"[prepare_data] {msg}", file=sys.stderr, flush=True)


# ---- reading ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ReadUnit:
    """One read task's share of an input: LeRobot episode positions, or (episodes=None) the whole
    ``read_dataset`` stream of a format whose reader has no per-episode access."""

    path: str
    name: str | None
    episodes: tuple[int, ...] | None = None


def plan_read_units(path: str, name: str | None, block_frames: int) -> list[ReadUnit]:
    """Split an input into read units of about `block_frames` frames of whole episodes.

    LeRobot datasets split by episode (each task opens its own reader: video decoding runs in
    parallel); RLDS and LLaVA inputs are read by one task."""
    from syvla.data.readers import detect_format

    if not Path(path).exists():
        raise FileNotFoundError(f"input dataset path does not exist: {path}")
    if detect_format(path) != "lerobot":
        return [ReadUnit(str(path), name)]
    from syvla.data.lerobot import LeRobotReader

    units, group, frames = [], [], 0
    for i, ep in enumerate(LeRobotReader(path, name=name).episodes):
        group.append(i)
        frames += ep.length
        if frames >= block_frames:
            units.append(ReadUnit(str(path), name, tuple(group)))
            group, frames = [], 0
    if group:
        units.append(ReadUnit(str(path), name, tuple(group)))
    if not units:
        raise ValueError(f"input dataset {path} has no episodes")
    return units


def iter_unit(unit: ReadUnit) -> Iterator[pa.Table]:
    """FRAME_SCHEMA tables of one read unit, one or more whole episodes each."""
    if unit.episodes is None:
        from syvla.data.readers import read_dataset

        yield from read_dataset(unit.path, name=unit.name)
        return
    from syvla.data.lerobot import LeRobotReader

    reader = LeRobotReader(unit.path, name=unit.name)
    try:
        for i in unit.episodes:
            yield reader.read_episode(i)
    finally:
        reader.close()


def episode_blocks(tables: Iterable[pa.Table], block_frames: int) -> Iterator[pa.Table]:
    """Re-cut a stream of frame tables into blocks of whole episodes (>= block_frames frames each, but the
    last). Episodes must arrive contiguously: one that resumes after another episode started raises."""
    pending: list[pa.Table] = []
    pending_rows = 0
    finished: set[tuple[str, int]] = set()
    open_key = None
    for t in tables:
        for start, stop in episode_bounds(t, K.DATASET, K.EPISODE_ID):
            key = (t.column(K.DATASET)[start].as_py(), t.column(K.EPISODE_ID)[start].as_py())
            if key != open_key:
                if key in finished:
                    raise ValueError(f"episode {key[0]}/{key[1]} resumes after other episodes: the reader must "
                                     f"yield each episode's frames contiguously")
                if open_key is not None:
                    finished.add(open_key)
                    if pending_rows >= block_frames:
                        yield pa.concat_tables(pending).combine_chunks()
                        pending, pending_rows = [], 0
                open_key = key
            pending.append(t.slice(start, stop - start))
            pending_rows += stop - start
    if pending:
        yield pa.concat_tables(pending).combine_chunks()


def _units_dataset(units: Sequence, key: str) -> ray.data.Dataset:
    items = [{key: json.dumps(dataclasses.asdict(u)) if dataclasses.is_dataclass(u) else u, "index": k}
             for k, u in enumerate(units)]
    return ray.data.from_items(items, override_num_blocks=len(items))  # one task per unit


def _unit(text: str) -> ReadUnit:
    u = json.loads(text)
    return ReadUnit(u["path"], u["name"], tuple(u["episodes"]) if u["episodes"] is not None else None)


def _read_units(batch: pa.Table, block_frames: int) -> Iterator[pa.Table]:
    for unit in batch.column("unit").to_pylist():
        yield from episode_blocks(iter_unit(_unit(unit)), block_frames)


def read_frames(path: str, name: str | None = None, block_frames: int = 512) -> ray.data.Dataset:
    """One input as a Ray Dataset of frames (FRAME_SCHEMA), read in parallel where the format allows.

    Ray may re-cut blocks downstream: per-episode work on it must group by episode first
    (prepare() instead runs its per-episode steps inside the read tasks)."""
    return _units_dataset(plan_read_units(path, name, block_frames), "unit").map_batches(
        _read_units, fn_kwargs={"block_frames": block_frames}, batch_size=1, batch_format="pyarrow")


# ---- cleaning, actions, chunking ------------------------------------------------------
def _summarize_units(batch: pa.Table, cfg: CleaningConfig, block_frames: int, cache_dir: str) -> Iterator[pa.Table]:
    """Read a unit, cache its whole-episode blocks as parquet and yield their episode summaries."""
    for unit, index in zip(batch.column("unit").to_pylist(), batch.column("index").to_pylist()):
        for j, block in enumerate(episode_blocks(iter_unit(_unit(unit)), block_frames)):
            # Written before summarizing: a retried task rewrites the same names with the same rows.
            pq.write_table(block, os.path.join(cache_dir, f"unit-{index:05d}-{j:05d}.parquet"), compression="none")
            yield summarize_episodes(block, cfg)


def summarize_and_cache(units: Sequence[ReadUnit], cfg: CleaningConfig, cache_dir: str | Path,
                        block_frames: int = 512) -> tuple[pa.Table, list[str]]:
    """Pass 1, in parallel: episode summaries (syvla.data.cleaning.SUMMARY_SCHEMA) of every unit, and
    the cached parquet files of whole-episode blocks that pass 2 reads instead of decoding again."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    out = _units_dataset(units, "unit").map_batches(
        _summarize_units, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"cfg": cfg, "block_frames": block_frames, "cache_dir": str(cache_dir)})
    summaries = pa.concat_tables([t for t in ray.get(out.to_arrow_refs()) if t.num_rows] or [SUMMARY_SCHEMA.empty_table()])
    return summaries, sorted(str(p) for p in Path(cache_dir).glob("unit-*.parquet"))


def to_action_representation(table: pa.Table, representation: str, rotation: str = "axis_angle",
                             specs: Mapping[str, act.EefSpec] | None = None) -> pa.Table:
    """Replace the robot rows' `action` by the chosen representation (native: unchanged)."""
    if representation == "native":
        return table
    if representation != "eef_relative":
        raise ValueError(f"action representation must be one of {ACTION_REPRESENTATIONS}, got {representation!r}")
    robot = pc.equal(table.column(K.KIND), K.KIND_ROBOT).to_numpy(zero_copy_only=False)
    if not robot.any():
        return table
    names = set(combine(table.column(K.DATASET)).filter(pa.array(robot)).to_pylist())
    if len(names) != 1 or not robot.all():
        raise ValueError(f"eef_relative conversion takes batches of one robot dataset, got {sorted(names)} "
                         f"with {int((~robot).sum())} non-robot rows")
    spec = act.eef_spec(names.pop(), specs or {})
    rel = act.to_eef_relative(vectors(table, K.ACTION), vectors(table, K.STATE), spec, rotation)
    return table.set_column(table.schema.get_field_index(K.ACTION), table.schema.field(K.ACTION), list_column(rel))


def clean_and_chunk_table(table: pa.Table, lookup, chunk_len: int, representation: str = "native",
                          rotation: str = "axis_angle", specs: Mapping[str, act.EefSpec] | None = None) -> pa.Table:
    """Pure per-batch pass 2: drop/trim per the decisions, convert actions, append chunks (PREPARED_SCHEMA)."""
    table = apply_decisions(table, lookup)
    if table.num_rows == 0:
        return PREPARED_SCHEMA.empty_table()
    return add_chunks(to_action_representation(table, representation, rotation, specs), chunk_len)


def _clean_files(batch: pa.Table, **kwargs) -> Iterator[pa.Table]:
    for path in batch.column("file").to_pylist():
        out = clean_and_chunk_table(pq.read_table(path), **kwargs)
        if out.num_rows:
            yield out


def clean_and_chunk(files: Sequence[str], decisions: pa.Table, chunk_len: int = DEFAULT_CHUNK_LEN,
                    representation: str = "native", rotation: str = "axis_angle") -> ray.data.Dataset:
    """Pass 2, in parallel over the cached whole-episode files: PREPARED_SCHEMA rows."""
    return _units_dataset(list(files), "file").map_batches(
        _clean_files, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"lookup": decision_lookup(decisions), "chunk_len": chunk_len,
                   "representation": representation, "rotation": rotation})


def _clean_write_files(batch: pa.Table, out_dir: str, fractions: Mapping[str, float], seed: int,
                       **kwargs) -> Iterator[pa.Table]:
    for path, index in zip(batch.column("file").to_pylist(), batch.column("index").to_pylist()):
        out = clean_and_chunk_table(pq.read_table(path), **kwargs)
        if out.num_rows:
            # A fixed name per input file: a retried task overwrites its own shard.
            pq.write_table(out, os.path.join(out_dir, f"part-{index:05d}.parquet"))
            yield partial_stats(out, fractions, seed)


def clean_chunk_write(files: Sequence[str], decisions: pa.Table, out_dir: str | Path, fractions: Mapping[str, float],
                      chunk_len: int = DEFAULT_CHUNK_LEN, representation: str = "native", rotation: str = "axis_angle",
                      seed: int = 0, specs: Mapping[str, act.EefSpec] | None = None) -> tuple[list[str], list[pa.Table]]:
    """Pass 2 of prepare(), in parallel: clean, convert and chunk each cached file, write it as one
    parquet shard under out_dir, and return the shards and the statistics partials of what was written
    (syvla.data.stats.PARTIAL_SCHEMA; `fractions` from syvla.data.stats.sample_fractions), so the
    statistics need no further pass over the data."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    parts = _units_dataset(list(files), "file").map_batches(
        _clean_write_files, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"out_dir": str(out_dir), "fractions": dict(fractions), "seed": seed,
                   "lookup": decision_lookup(decisions), "chunk_len": chunk_len,
                   "representation": representation, "rotation": rotation, "specs": dict(specs or {})})
    partials = ray.get(parts.to_arrow_refs())
    return sorted(str(p) for p in Path(out_dir).glob("part-*.parquet")), partials


# ---- statistics ----------------------------------------------------------------------
def compute_norm_stats(ds: ray.data.Dataset, max_quantile_frames: int = 200_000, seed: int = 0,
                       datasets: Iterable[str] | None = None, counts: Mapping[str, int] | None = None) -> NormStats:
    """Per-dataset mean/std (exact: partial moments per block merged with merge_moments) and q01/q99
    (exact up to max_quantile_frames robot frames per dataset, else from a uniform sample of about that
    many). `counts` (robot frames per dataset), when known, saves the counting pass."""
    light = ds.select_columns(STATS_COLUMNS)
    if counts is None:
        counts = {}
        for t in ray.get(light.map_batches(robot_counts, batch_format="pyarrow").to_arrow_refs()):
            for r in t.to_pylist():
                counts[r[K.DATASET]] = counts.get(r[K.DATASET], 0) + r["count"]
    if not any(counts.values()):
        raise ValueError("no robot frames to compute normalization statistics from")
    fractions = sample_fractions(counts, max_quantile_frames)
    parts = light.map_batches(partial_stats, fn_kwargs={"fractions": fractions, "seed": seed}, batch_format="pyarrow")
    return merge_partial_stats(ray.get(parts.to_arrow_refs()), datasets)


# ---- writing and reading prepared data -------------------------------------------------
def read_prepared(root: str | Path, names: Sequence[str] | None = None) -> dict[str, ray.data.Dataset]:
    """{dataset name: Ray Dataset of its prepared (cleaned, chunked) shards} under a prepare() output."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST_FILE).read_text()) if (root / MANIFEST_FILE).exists() else None
    if manifest is None:
        raise FileNotFoundError(f"{root / MANIFEST_FILE} missing: not a prepare_data output")
    names = list(manifest["datasets"]) if names is None else list(names)
    out = {}
    for name in names:
        if name not in manifest["datasets"]:
            raise KeyError(f"prepared data at {root} has no dataset {name!r}; has {sorted(manifest['datasets'])}")
        out[name] = ray.data.read_parquet(str(root / manifest["datasets"][name]["path"]))
    return out


# ---- the prepare pipeline --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """read -> clean -> chunk -> write shards -> norm_stats.json + cleaning report (pipelines/prepare_data.py)."""

    inputs: tuple[str, ...] = ("metaworld=data/metaworld",)  # name=path pairs; a bare path keeps the reader's name
    output: str = "data/prepared/metaworld"  # <output>/<name>/*.parquet, norm_stats.json, cleaning_report.json
    chunk_len: int = DEFAULT_CHUNK_LEN  # actions per chunk (paper App. A: 50)
    action_representation: str = "native"  # "native" or "eef_relative" (needs an EefSpec for the dataset)
    eef_rotation: str = "axis_angle"  # rotation in the eef_relative form: axis_angle (7-d) or rot6d (10-d)
    block_frames: int = 512  # frames per read task and cached block (whole episodes); fewer = more parallel tasks
    max_quantile_frames: int = 200_000  # q01/q99 exact up to this many frames per dataset, else sampled
    seed: int = 0
    overwrite: bool = False  # replace an existing output directory
    cleaning: CleaningConfig = CleaningConfig()

    def __post_init__(self):
        if not self.inputs:
            raise ValueError("PrepareConfig.inputs is empty: give at least one name=path")
        names = [n for n, _ in self.named_inputs() if n is not None]
        if len(set(names)) != len(names):
            raise ValueError(f"PrepareConfig.inputs repeats a dataset name: {names}")
        if self.chunk_len < 1:
            raise ValueError(f"PrepareConfig.chunk_len must be >= 1, got {self.chunk_len}")
        if self.action_representation not in ACTION_REPRESENTATIONS:
            raise ValueError(f"PrepareConfig.action_representation must be one of {ACTION_REPRESENTATIONS}, "
                             f"got {self.action_representation!r}")
        act.unified_dim(self.eef_rotation)
        for field in ("block_frames", "max_quantile_frames"):
            if getattr(self, field) < 1:
                raise ValueError(f"PrepareConfig.{field} must be >= 1, got {getattr(self, field)}")

    def named_inputs(self) -> list[tuple[str | None, str]]:
        out = []
        for item in self.inputs:
            name, sep, path = item.partition("=")
            out.append((name, path) if sep else (None, item))
            if sep and not (name and path):
                raise ValueError(f"PrepareConfig.inputs: {item!r} is not name=path")
        return out


@dataclasses.dataclass
class PrepareResult:
    report: CleaningReport
    norm_stats: NormStats
    output: Path
    frames_in: int
    frames_out: int
    seconds: float


def prepare(cfg: PrepareConfig, eef_specs: Mapping[str, act.EefSpec] | None = None) -> PrepareResult:
    """Run the whole prepare pipeline on the connected Ray cluster; see the module docstring.
    `eef_specs` ({dataset name: EefSpec}) serves action_representation "eef_relative"."""
    t0 = time.time()
    out = Path(cfg.output)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise FileExistsError(f"output {out} exists and is not empty; pass overwrite=True to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    report, robot_frames, stats_parts = CleaningReport(), {}, []
    manifest = {"chunk_len": cfg.chunk_len, "action_representation": cfg.action_representation,
                "eef_rotation": cfg.eef_rotation, "datasets": {}}
    for k, (name, path) in enumerate(cfg.named_inputs()):
        cache = out / CACHE_DIR / f"input-{k}"
        t1 = time.time()
        units = plan_read_units(path, name, cfg.block_frames)
        summaries, files = summarize_and_cache(units, cfg.cleaning, cache, cfg.block_frames)
        found = sorted(set(summaries.column(K.DATASET).to_pylist()))
        if len(found) != 1:
            raise ValueError(f"input {path} holds datasets {found}; give one name=path per dataset")
        dataset = found[0]
        if dataset in manifest["datasets"]:
            raise ValueError(f"dataset {dataset!r} comes from more than one input")
        decisions, part = decide(summaries, cfg.cleaning)
        report.datasets.update(part.datasets)
        robot_frames[dataset] = _kept_robot_frames(summaries, decisions)
        d = part.datasets[dataset]
        _log(f"{dataset}: read and checked {d.frames_in} frames in {len(units)} task(s) ({time.time() - t1:.1f} s); "
             f"keeping {d.episodes_out}/{d.episodes_in} episodes, {d.frames_out} frames")
        t1 = time.time()
        fractions = sample_fractions({dataset: max(robot_frames[dataset], 1)}, cfg.max_quantile_frames)
        written, partials = clean_chunk_write(files, decisions, out / dataset, fractions, cfg.chunk_len,
                                              cfg.action_representation, cfg.eef_rotation, cfg.seed, eef_specs)
        stats_parts += partials
        shutil.rmtree(cache)
        manifest["datasets"][dataset] = {"path": dataset, "source": path, "files": len(written),
                                         "frames": d.frames_out, "episodes": d.episodes_out}
        _log(f"{dataset}: wrote {len(written)} shard(s) to {out / dataset} ({time.time() - t1:.1f} s)")
    shutil.rmtree(out / CACHE_DIR, ignore_errors=True)
    robot = sorted(n for n, frames in robot_frames.items() if frames)
    # Datasets without robot frames (VQA) have nothing to normalize and get no entry.
    norm_stats = merge_partial_stats(stats_parts, robot) if robot else NormStats({})
    norm_stats.save(out / K.CKPT_NORM_STATS)
    report.save(out / REPORT_FILE)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    _log(f"done in {time.time() - t0:.1f} s: {report.total('frames_out')}/{report.total('frames_in')} frames kept; "
         f"statistics for {norm_stats.names()} in {out / K.CKPT_NORM_STATS}")
    return PrepareResult(report, norm_stats, out, report.total("frames_in"), report.total("frames_out"), time.time() - t0)


def _kept_robot_frames(summaries: pa.Table, decisions: pa.Table) -> int:
    robot = pc.equal(summaries.column(K.KIND), K.KIND_ROBOT).to_numpy(zero_copy_only=False)
    keys = {(d, e) for d, e, r in zip(summaries.column(K.DATASET).to_pylist(), summaries.column(K.EPISODE_ID).to_pylist(), robot) if r}
    return sum(d["trim_stop"] - d["trim_start"] for d in decisions.to_pylist()
               if d["keep"] and (d[K.DATASET], d[K.EPISODE_ID]) in keys)


# ---- mixture stream ----------------------------------------------------------------------
def _tag(table: pa.Table, source: str, passes: Sequence[int]) -> pa.Table:
    """The batch once per pass index, each copy tagged with its source and pass (MIXTURE_SOURCE/PASS)."""
    n = table.num_rows
    copies = [table.append_column(MIXTURE_SOURCE, pa.array([source] * n, pa.string()))
              .append_column(MIXTURE_PASS, pa.array(np.full(n, p, np.int64))) for p in passes]
    return pa.concat_tables(copies)


def source_kinds(ds: ray.data.Dataset) -> set[str]:
    return set(ds.unique(K.KIND))


def build_mixture_dataset(
    sources: Mapping[str, ray.data.Dataset],
    weights: Mapping[str, float] | None,
    multimodal_ratio: float,
    num_samples: int,
    seed: int = 0,
    multimodal: Sequence[str] | None = None,
    shuffle: str = "global",
) -> ray.data.Dataset:
    """A Ray Dataset of `num_samples` rows mixed per syvla.data.mixture.plan_mixture (exact counts).

    multimodal: the VQA sources (default: sources whose rows are all kind ``vqa``).
    shuffle: "global" interleaves with a full random_shuffle (exact, costs an all-to-all);
    "blocks" only randomizes block order, for large data: then iterate with
    ``local_shuffle_buffer_size`` so batches mix sources. Each row gains MIXTURE_SOURCE and
    MIXTURE_PASS. Ray Train: ``TorchTrainer(..., datasets={"train": ds})`` and in each worker
    ``ray.train.get_dataset_shard("train").iter_batches(...)`` -> row_to_sample per row; the
    workers' shards are disjoint (streaming_split)."""
    if shuffle not in ("global", "blocks"):
        raise ValueError(f"shuffle must be 'global' or 'blocks', got {shuffle!r}")
    if multimodal is None:
        multimodal = []
        for name, ds in sources.items():
            kinds = source_kinds(ds)
            if len(kinds) != 1:
                raise ValueError(f"mixture source {name!r} mixes kinds {sorted(kinds)}; pass multimodal= explicitly")
            if kinds == {K.KIND_VQA}:
                multimodal.append(name)
    sizes = {name: ds.count() for name, ds in sources.items()}
    plan = plan_mixture(sizes, weights, multimodal_ratio, num_samples, seed, multimodal)
    parts = []
    for i, s in enumerate(plan.sources):
        ds = sources[s.name]
        if s.full_passes:  # every row full_passes times, in one map over the source
            parts.append(ds.map_batches(_tag, fn_kwargs={"source": s.name, "passes": list(range(s.full_passes))},
                                        batch_format="pyarrow"))
        if s.remainder:
            picked = (ds.random_shuffle(seed=seed + 1 + i) if shuffle == "global"
                      else ds.randomize_block_order(seed=seed + 1 + i))
            parts.append(picked.limit(s.remainder).map_batches(
                _tag, fn_kwargs={"source": s.name, "passes": [s.full_passes]}, batch_format="pyarrow"))
    mixed = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return mixed.random_shuffle(seed=seed) if shuffle == "global" else mixed.randomize_block_order(seed=seed)


# ---- model inputs ----------------------------------------------------------------------
def to_tensor_batches(ds: ray.data.Dataset, image_size: int | tuple[int, int], batch_size: int = 32,
                      views: Sequence[str] | None = None, num_tasks: int | None = None) -> ray.data.Dataset:
    """Decode + resize images and stack state/actions in Ray Data workers (one embodiment), so the
    trainer only collates: columns images [V, h, w, 3] uint8, state, actions, action_mask.
    num_tasks caps the concurrent decode tasks (leave CPUs to the trainer on small machines)."""
    compute = ray.data.TaskPoolStrategy(size=num_tasks) if num_tasks else None
    return ds.map_batches(tensor_batch, fn_kwargs={"image_size": image_size, "views": views},
                          batch_size=batch_size, batch_format="pyarrow", compute=compute)
