"""Per-dataset normalization statistics of state and action (mean/std, q01/q99).

Two paths that must agree (tests/data/test_stats.py checks parity):

* :func:`norm_stats_exact` — in-process, exact: concatenates every robot frame
  and calls ``FeatureStats.from_array`` (numpy ``quantile``, linear method).
* The Ray path (``syvla.data.prepare.compute_norm_stats``) maps
  :func:`partial_stats` over blocks — per dataset (count, mean, M2) of state and
  action plus the rows kept for quantiles — and :func:`merge_partial_stats`
  combines them with ``syvla.normalize.merge_moments`` (Chan et al.). Quantiles:
  every frame of a dataset with at most ``max_quantile_frames`` frames (then
  exact, identical to the in-process path), otherwise a uniform Bernoulli sample
  of about that many frames chosen by a hash of (dataset, episode_id,
  frame_index, seed): deterministic, and independent of how Ray cuts blocks.

Only robot rows count: VQA rows carry no state or action. Asking for a dataset
without robot frames raises, and so do non-finite values (clean first).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from syvla import constants as K
from syvla.data.columns import combine, list_column, vectors
from syvla.normalize import DatasetStats, FeatureStats, NormStats, merge_moments

FEATURES = (K.STATE, K.ACTION)
STATS_COLUMNS = [K.DATASET, K.EPISODE_ID, K.FRAME_INDEX, K.KIND, K.STATE, K.ACTION]

PARTIAL_SCHEMA = pa.schema(
    [
        pa.field(K.DATASET, pa.string()),
        pa.field("count", pa.int64()),
        pa.field("state_mean", pa.list_(pa.float64())),
        pa.field("state_m2", pa.list_(pa.float64())),  # sum of squared deviations from state_mean
        pa.field("action_mean", pa.list_(pa.float64())),
        pa.field("action_m2", pa.list_(pa.float64())),
        pa.field("state_sample", pa.list_(pa.list_(pa.float32()))),  # rows kept for the quantiles
        pa.field("action_sample", pa.list_(pa.list_(pa.float32()))),
    ]
)
COUNT_SCHEMA = pa.schema([pa.field(K.DATASET, pa.string()), pa.field("count", pa.int64())])


def robot_rows(table: pa.Table) -> pa.Table:
    return table.filter(pc.equal(table.column(K.KIND), K.KIND_ROBOT))


def _per_dataset(table: pa.Table) -> Iterable[tuple[str, pa.Table]]:
    names = combine(table.column(K.DATASET))
    for name in pc.unique(names).to_pylist():
        yield name, table.filter(pc.equal(names, name))


def _feature(table: pa.Table, feature: str, name: str) -> np.ndarray:
    x = vectors(table, feature, np.float64)
    if x.shape[1] == 0:
        raise ValueError(f"dataset {name!r}: robot rows with an empty {feature!r} vector")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"dataset {name!r}: non-finite values in {feature!r}; clean the data first")
    return x


def robot_counts(table: pa.Table) -> pa.Table:
    """Robot frames per dataset in this batch (COUNT_SCHEMA rows)."""
    names = combine(robot_rows(table.select([K.DATASET, K.KIND])).column(K.DATASET))
    counts = pc.value_counts(names).to_pylist() if len(names) else []
    return pa.Table.from_pylist([{K.DATASET: c["values"], "count": c["counts"]} for c in counts], schema=COUNT_SCHEMA)


def sample_fractions(counts: Mapping[str, int], max_quantile_frames: int) -> dict[str, float]:
    """Per dataset, the share of frames kept for quantiles: 1 (exact) up to max_quantile_frames frames."""
    if max_quantile_frames < 1:
        raise ValueError(f"max_quantile_frames must be >= 1, got {max_quantile_frames}")
    return {name: min(1.0, max_quantile_frames / n) for name, n in counts.items() if n > 0}


def partial_stats(table: pa.Table, fractions: Mapping[str, float], seed: int = 0) -> pa.Table:
    """One PARTIAL_SCHEMA row per dataset in this batch: (count, mean, M2) of state and action, and the
    rows chosen for the quantiles (see :func:`quantile_rows`)."""
    table = robot_rows(table)
    chosen = dict(_per_dataset(quantile_rows(table, fractions, seed))) if table.num_rows else {}
    rows = []
    for name, part in _per_dataset(table):
        row = {K.DATASET: name, "count": part.num_rows}
        for feature in FEATURES:
            x = _feature(part, feature, name)
            mean = x.mean(axis=0)
            row[f"{feature}_mean"], row[f"{feature}_m2"] = mean.tolist(), ((x - mean) ** 2).sum(axis=0).tolist()
            sample = vectors(chosen[name], feature) if name in chosen else np.zeros((0, x.shape[1]), np.float32)
            row[f"{feature}_sample"] = sample
        rows.append(row)
    if not rows:
        return PARTIAL_SCHEMA.empty_table()
    cols = {f.name: pa.array([r[f.name] for r in rows], f.type) for f in PARTIAL_SCHEMA if not f.name.endswith("_sample")}
    for feature in FEATURES:
        samples = [r[f"{feature}_sample"] for r in rows]
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in samples])]).astype(np.int32)
        inner = list_column(np.concatenate(samples)) if sum(len(x) for x in samples) else pa.array([], pa.list_(pa.float32()))
        cols[f"{feature}_sample"] = pa.ListArray.from_arrays(pa.array(offsets), inner)
    return pa.Table.from_pydict(cols, schema=PARTIAL_SCHEMA)


def merge_partial_stats(parts: Iterable[pa.Table], datasets: Iterable[str] | None = None) -> NormStats:
    """NormStats from all PARTIAL_SCHEMA rows: moments merged with syvla.normalize.merge_moments,
    quantiles over the concatenated samples. `datasets` (default: all seen) must all be present."""
    parts = [p for p in parts if p.num_rows]
    table = pa.concat_tables(parts) if parts else PARTIAL_SCHEMA.empty_table()
    by_name: dict[str, list[dict]] = {}
    for i, name in enumerate(table.column(K.DATASET).to_pylist()):
        by_name.setdefault(name, []).append(i)
    names = sorted(by_name) if datasets is None else list(datasets)
    out = {}
    for name in names:
        if name not in by_name:
            raise KeyError(f"no statistics for dataset {name!r}: it has no robot frames")
        rows = table.take(pa.array(by_name[name]))
        counts = rows.column("count").to_pylist()
        feats = {}
        for feature in FEATURES:
            means, m2s = rows.column(f"{feature}_mean").to_pylist(), rows.column(f"{feature}_m2").to_pylist()
            dims = {len(m) for m in means}
            if len(dims) != 1:
                raise ValueError(f"dataset {name!r}: {feature!r} vectors have different lengths {sorted(dims)}")
            n, mean, m2 = merge_moments([(c, np.asarray(m), np.asarray(v)) for c, m, v in zip(counts, means, m2s)])
            sample = pc.list_flatten(rows.column(f"{feature}_sample"))
            if len(sample) == 0:
                raise KeyError(f"no rows sampled for the quantiles of dataset {name!r}")
            x = vectors(pa.table({feature: sample}), feature, np.float64)
            q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
            feats[feature] = FeatureStats(mean, np.sqrt(m2 / n), q01, q99, count=int(n))
        out[name] = DatasetStats(state=feats[K.STATE], action=feats[K.ACTION])
    return NormStats(out)


def _row_uniform(table: pa.Table, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per row from a hash of (dataset, episode_id, frame_index, seed)."""
    ds = pc.dictionary_encode(combine(table.column(K.DATASET)))
    name_hash = np.array([hash_str(s) for s in ds.dictionary.to_pylist()], np.uint64)[ds.indices.to_numpy()]
    ep = combine(table.column(K.EPISODE_ID)).to_numpy(zero_copy_only=False).astype(np.uint64)
    fi = combine(table.column(K.FRAME_INDEX)).to_numpy(zero_copy_only=False).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = name_hash ^ (ep * np.uint64(0x9E3779B97F4A7C15)) ^ (fi * np.uint64(0xC2B2AE3D27D4EB4F)) ^ np.uint64(seed % 2**64)
        x = _splitmix(x)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_str(s: str) -> int:
    """A process-independent 64-bit hash (Python's hash() is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


def quantile_rows(table: pa.Table, fractions: Mapping[str, float], seed: int = 0) -> pa.Table:
    """Robot rows kept for quantiles: each dataset's rows with probability fractions[dataset] (1 keeps all).

    Returns columns dataset, state, action only."""
    table = robot_rows(table)
    if table.num_rows == 0:
        return pa.table({K.DATASET: pa.array([], pa.string()), K.STATE: pa.array([], pa.list_(pa.float32())),
                         K.ACTION: pa.array([], pa.list_(pa.float32()))})
    names = combine(table.column(K.DATASET)).to_pylist()
    missing = sorted(set(names) - set(fractions))
    if missing:
        raise KeyError(f"no quantile sampling fraction for dataset(s) {missing}")
    frac = np.array([fractions[n] for n in names])
    keep = frac >= 1.0
    if not np.all(keep):
        keep |= _row_uniform(table, seed) < frac
    return table.filter(pa.array(keep)).select([K.DATASET, K.STATE, K.ACTION])


def norm_stats_exact(tables: pa.Table | Iterable[pa.Table], datasets: Iterable[str] | None = None) -> NormStats:
    """Exact statistics of all robot frames, in-process (the reference the Ray path is tested against)."""
    table = tables if isinstance(tables, pa.Table) else pa.concat_tables(list(tables))
    parts = dict(_per_dataset(robot_rows(table.select([K.DATASET, K.KIND, K.STATE, K.ACTION]))))
    names = sorted(parts) if datasets is None else list(datasets)
    out = {}
    for name in names:
        if name not in parts:
            raise KeyError(f"no statistics for dataset {name!r}: it has no robot frames")
        out[name] = DatasetStats(state=FeatureStats.from_array(_feature(parts[name], K.STATE, name)),
                                 action=FeatureStats.from_array(_feature(parts[name], K.ACTION, name)))
    return NormStats(out)


__all__ = ["robot_counts", "sample_fractions", "partial_stats", "merge_partial_stats", "quantile_rows",
           "norm_stats_exact", "robot_rows", "PARTIAL_SCHEMA", "COUNT_SCHEMA", "STATS_COLUMNS"]
