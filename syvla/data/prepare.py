"""Ray Data preparation: read -> clean -> convert actions -> chunk -> write shards, statistics, report, manifest.

Nothing here calls ``ray.init``: the caller (a pipeline, a test fixture) connects
first. The per-batch work is plain functions of syvla.data (readers, cleaning,
chunking, stats); this module wires them into Ray tasks. The output is the
prepared-data format of syvla.data.prepared.

Cleaning and chunking need whole episodes in one batch, and Ray re-cuts blocks
as it sees fit. So :func:`prepare` runs its per-episode steps *inside* the read
tasks, where episodes are whole by construction, in two passes per input:

1. read units in parallel (LeRobot: groups of episodes, each task with its own
   reader and video decoder), cache each whole-episode block as parquet under the
   output's cache dir and return only its episode summaries (image checks run here);
   an episode the reader cannot read (syvla.data.lerobot.EpisodeError) is summarized
   with its error and dropped as ``unreadable``; an input none of whose episodes
   can be read stops the run;
2. decide in the driver (dataset-wide median/MAD outliers, duplicates), then clean,
   convert the action representation and chunk each cached file in parallel; each
   task writes its parquet shard under ``<output>/<dataset>/`` and returns the
   statistics partials of what it wrote (syvla.data.stats).

Then the partials merge into the normalization statistics (moments merged with
``syvla.normalize.merge_moments``; quantiles exact up to ``max_quantile_frames``
frames per dataset, else from a hash-chosen uniform sample), and the cleaning
report and the manifest are written. :func:`compute_norm_stats` does the same
statistics over any Ray Dataset.
The cache needs storage every Ray node can reach when the cluster has several.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from syvla import constants as K
from syvla.cli import field
from syvla.data import actions as act
from syvla.data import prepared
from syvla.data.chunking import DEFAULT_CHUNK_LEN, clean_and_chunk_table, padding_rule
from syvla.data.cleaning import (SUMMARY_SCHEMA, UNREADABLE, CleaningConfig, CleaningReport, decide, decision_lookup,
                                 kept_robot_frames, summarize_episodes, unreadable_summaries)
from syvla.data.readers import (ReadUnit, UnreadableEpisode, declared_metadata, episode_blocks, iter_unit,
                                plan_read_units)
from syvla.data.stats import STATS_COLUMNS, merge_partial_stats, partial_stats, robot_counts, sample_fractions
from syvla.normalize import NormStats


def _log(msg: str) -> None:
    print(f"[prepare_data] {msg}", file=sys.stderr, flush=True)


# ---- reading ------------------------------------------------------------------------
def _units_dataset(units: Sequence, key: str) -> ray.data.Dataset:
    items = [{key: u.to_json() if isinstance(u, ReadUnit) else u, "index": k} for k, u in enumerate(units)]
    return ray.data.from_items(items, override_num_blocks=len(items))  # one task per unit


def _read_units(batch: pa.Table, block_frames: int) -> Iterator[pa.Table]:
    for unit in batch.column("unit").to_pylist():
        yield from episode_blocks(iter_unit(ReadUnit.from_json(unit)), block_frames)


def read_frames(path: str, name: str | None = None, block_frames: int = 512) -> ray.data.Dataset:
    """One input as a Ray Dataset of frames (FRAME_SCHEMA), read in parallel where the format allows.

    Ray may re-cut blocks downstream: per-episode work on it must group by episode first
    (prepare() instead runs its per-episode steps inside the read tasks)."""
    return _units_dataset(plan_read_units(path, name, block_frames), "unit").map_batches(
        _read_units, fn_kwargs={"block_frames": block_frames}, batch_size=1, batch_format="pyarrow")


# ---- pass 1: summaries and the cache ------------------------------------------------------
def _summarize_units(batch: pa.Table, cfg: CleaningConfig, block_frames: int, cache_dir: str) -> Iterator[pa.Table]:
    """Read a unit, cache its whole-episode blocks as parquet and yield their episode summaries, and
    summaries of the episodes that could not be read (dropped as unreadable, with their errors)."""
    for unit, index in zip(batch.column("unit").to_pylist(), batch.column("index").to_pylist()):
        unreadable: list[UnreadableEpisode] = []
        for j, block in enumerate(episode_blocks(iter_unit(ReadUnit.from_json(unit), unreadable), block_frames)):
            # Written before summarizing: a retried task rewrites the same names with the same rows.
            pq.write_table(block, os.path.join(cache_dir, prepared.cache_name(index, j)), compression="none")
            yield summarize_episodes(block, cfg)
        if unreadable:
            yield unreadable_summaries(unreadable)


def summarize_and_cache(units: Sequence[ReadUnit], cfg: CleaningConfig, cache_dir: str | Path,
                        block_frames: int = 512) -> tuple[pa.Table, list[str]]:
    """Pass 1, in parallel: episode summaries (syvla.data.cleaning.SUMMARY_SCHEMA) of every unit, and
    the cached parquet files of whole-episode blocks that pass 2 reads instead of decoding again."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    out = _units_dataset(units, "unit").map_batches(
        _summarize_units, batch_size=1, batch_format="pyarrow",
        fn_kwargs={"cfg": cfg, "block_frames": block_frames, "cache_dir": str(cache_dir)})
    summaries = pa.concat_tables([t for t in ray.get(out.to_arrow_refs()) if t.num_rows] or [SUMMARY_SCHEMA.empty_table()])
    return summaries, sorted(str(p) for p in Path(cache_dir).glob(prepared.CACHE_GLOB))


# ---- pass 2: clean, convert, chunk, write ----------------------------------------------------
def _clean_write_files(batch: pa.Table, out_dir: str, fractions: Mapping[str, float], seed: int,
                       **kwargs) -> Iterator[pa.Table]:
    for path, index in zip(batch.column("file").to_pylist(), batch.column("index").to_pylist()):
        out = clean_and_chunk_table(pq.read_table(path), **kwargs)
        if out.num_rows:
            # A fixed name per input file: a retried task overwrites its own shard.
            pq.write_table(out, os.path.join(out_dir, prepared.shard_name(index)))
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
    return sorted(str(p) for p in Path(out_dir).glob(prepared.SHARD_GLOB)), partials


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


# ---- the prepare pipeline --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """read -> clean -> chunk -> write shards -> norm_stats.json + cleaning report (pipelines/prepare_data.py)."""

    inputs: tuple[str, ...] = field(("metaworld=data/metaworld",),
                                    "name=path pairs of source datasets; a bare path keeps the reader's name")
    output: str = field("data/prepared/metaworld", "the prepared root (syvla.data.prepared): shards, statistics, report")
    chunk_len: int = field(DEFAULT_CHUNK_LEN, "actions per chunk (paper App. A: 50)")
    action_representation: str = field("native", "native or eef_relative (needs an EefSpec for the dataset)")
    eef_rotation: str = field("axis_angle", "rotation in the eef_relative form: axis_angle (7-d) or rot6d (10-d)")
    block_frames: int = field(512, "frames per read task and cached block (whole episodes); fewer = more parallel tasks")
    max_quantile_frames: int = field(200_000, "q01/q99 exact up to this many frames per dataset, else sampled")
    seed: int = field(0, "seed of the frame sample q01/q99 come from past max_quantile_frames")
    overwrite: bool = field(False, "replace an existing output directory (only ever a prepared root)")
    origin: str = field("", "recorded in the manifest: '' = prepared on request; prepared.DEMO_ORIGIN = the demo step")
    cleaning: CleaningConfig = field(default_factory=CleaningConfig,
                                     help="episode filters and thresholds (syvla.data.cleaning); --cleaning.* flags")

    def __post_init__(self):
        if not self.inputs:
            raise ValueError("PrepareConfig.inputs is empty: give at least one name=path")
        names = [n for n, _ in self.named_inputs() if n is not None]
        if len(set(names)) != len(names):
            raise ValueError(f"PrepareConfig.inputs repeats a dataset name: {names}")
        if self.chunk_len < 1:
            raise ValueError(f"PrepareConfig.chunk_len must be >= 1, got {self.chunk_len}")
        if self.action_representation not in act.ACTION_REPRESENTATIONS:
            raise ValueError(f"PrepareConfig.action_representation must be one of {act.ACTION_REPRESENTATIONS}, "
                             f"got {self.action_representation!r}")
        act.unified_dim(self.eef_rotation)
        for name in ("block_frames", "max_quantile_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"PrepareConfig.{name} must be >= 1, got {getattr(self, name)}")

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


def _dataset_kind(summaries: pa.Table) -> str:
    kinds = sorted(set(summaries.column(K.KIND).to_pylist()))
    return kinds[0] if len(kinds) == 1 else "+".join(kinds)


def _embodiment(dataset: str, path: str, shards: Sequence[str], representation: str) -> prepared.EmbodimentRecord:
    """The embodiment record of a robot dataset from its first shard and its source's metadata."""
    first = pq.read_table(shards[0], columns=[K.KIND, K.STATE, K.ACTION, K.IMAGE_VIEWS])
    return prepared.embodiment_record(dataset, first, representation, declared_metadata(path))


def check_output(cfg: PrepareConfig) -> bool:
    """Whether `cfg.output` must be cleared first; FileExistsError when it may not be written at all:
    a non-empty folder without `overwrite`, or (even with it) one that is not a prepared root."""
    out = Path(cfg.output)
    if not (out.exists() and any(out.iterdir())):
        return False
    if not cfg.overwrite:
        raise FileExistsError(f"output {out} exists and is not empty; pass overwrite=True to replace it")
    if not (prepared.manifest_path(out).is_file() or prepared.cache_dir(out).is_dir()):
        raise FileExistsError(f"output {out} exists and is not a prepared root (no {prepared.MANIFEST_FILE}); "
                              f"refusing to delete what it holds: choose another output")
    return True


def prepare(cfg: PrepareConfig, eef_specs: Mapping[str, act.EefSpec] | None = None) -> PrepareResult:
    """Run the whole prepare pipeline on the connected Ray cluster; see the module docstring.

    `eef_specs` ({dataset name: EefSpec}, added to the robots this package knows) serves action_representation
    "eef_relative" and the hold-still padding of the chunks (syvla.data.chunking.padding_rule)."""
    t0 = time.time()
    eef_specs = {**act.known_eef_specs(), **(eef_specs or {})}
    out = Path(cfg.output).resolve()  # Ray tasks may run in another working directory (or on another node)
    if check_output(cfg):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    report, robot_frames, stats_parts = CleaningReport(), {}, []
    entries: dict[str, prepared.DatasetEntry] = {}
    for k, (name, path) in enumerate(cfg.named_inputs()):
        path = path if "://" in path else str(Path(path).resolve())
        cache = prepared.cache_dir(out) / f"input-{k}"
        t1 = time.time()
        units = plan_read_units(path, name, cfg.block_frames)
        summaries, files = summarize_and_cache(units, cfg.cleaning, cache, cfg.block_frames)
        found = sorted(set(summaries.column(K.DATASET).to_pylist()))
        if len(found) != 1:
            raise ValueError(f"input {path} holds datasets {found}; give one name=path per dataset")
        dataset = found[0]
        if dataset in entries:
            raise ValueError(f"dataset {dataset!r} comes from more than one input")
        decisions, part = decide(summaries, cfg.cleaning)
        report.datasets.update(part.datasets)
        robot_frames[dataset] = kept_robot_frames(summaries, decisions)
        d = part.datasets[dataset]
        for episode, error in sorted(d.errors.items()):
            _log(f"{dataset}: dropping episode {episode}, it cannot be read: {error}")
        if d.episodes_in and len(d.dropped.get(UNREADABLE, [])) == d.episodes_in:
            raise ValueError(f"input {path}: none of its {d.episodes_in} episodes can be read; "
                             f"episode {min(d.errors)}: {d.errors[min(d.errors)]}")
        _log(f"{dataset}: read and checked {d.frames_in} frames in {len(units)} task(s) ({time.time() - t1:.1f} s); "
             f"keeping {d.episodes_out}/{d.episodes_in} episodes, {d.frames_out} frames")
        t1 = time.time()
        fractions = sample_fractions({dataset: max(robot_frames[dataset], 1)}, cfg.max_quantile_frames)
        written, partials = clean_chunk_write(files, decisions, out / dataset, fractions, cfg.chunk_len,
                                              cfg.action_representation, cfg.eef_rotation, cfg.seed, eef_specs)
        stats_parts += partials
        shutil.rmtree(cache)
        embodiment = (_embodiment(dataset, path, written, cfg.action_representation)
                      if robot_frames[dataset] and written else None)
        entries[dataset] = prepared.DatasetEntry(path=dataset, source=path, files=len(written), frames=d.frames_out,
                                                 episodes=d.episodes_out, kind=_dataset_kind(summaries),
                                                 embodiment=embodiment)
        padding = "none"
        if embodiment is not None:
            rule = padding_rule(dataset, cfg.action_representation, cfg.eef_rotation, eef_specs)
            padding = rule(np.zeros(embodiment.action_dim, np.float32))[1]
        _log(f"{dataset}: wrote {len(written)} shard(s) to {out / dataset} ({time.time() - t1:.1f} s); chunk "
             f"padding past the episode end: {padding}")
    shutil.rmtree(prepared.cache_dir(out), ignore_errors=True)
    robot = sorted(n for n, frames in robot_frames.items() if frames)
    # Datasets without robot frames (VQA) have nothing to normalize and get no entry.
    norm_stats = merge_partial_stats(stats_parts, robot) if robot else NormStats({})
    norm_stats.save(prepared.norm_stats_path(out))
    prepared.write_report(out, report)
    prepared.write_manifest(out, prepared.Manifest(chunk_len=cfg.chunk_len, datasets=entries,
                                                   action_representation=cfg.action_representation,
                                                   eef_rotation=cfg.eef_rotation, origin=cfg.origin))
    _log(f"done in {time.time() - t0:.1f} s: {report.total('frames_out')}/{report.total('frames_in')} frames kept; "
         f"statistics for {norm_stats.names()} in {prepared.norm_stats_path(out)}")
    return PrepareResult(report, norm_stats, out, report.total("frames_in"), report.total("frames_out"), time.time() - t0)
