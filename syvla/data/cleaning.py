"""Cleaning filters over frame tables (FRAME_SCHEMA), pure pyarrow/numpy: no Ray.

Cleaning works per episode in two steps so that Ray can run the expensive part
(decoding every image) in parallel and only tiny summaries meet in one place:

1. :func:`summarize_episodes` (per batch of whole episodes) -> one summary row per
   episode: frame count, non-finite frames, black/undecodable images, success,
   idle-trim bounds, a hash of the state/action sequence, and its actions.
   An episode the reader could not read gets a row from :func:`unreadable_summaries`
   holding its error, and is dropped as ``unreadable``.
2. :func:`decide` (all summaries) -> a keep/trim decision per episode plus a
   :class:`CleaningReport`. Dataset-wide filters live here: robust action
   z-scores (median and a MAD-based scale over the dataset, exact: every kept
   action of the dataset meets in the driver; see :func:`robust_action_stats`)
   and duplicate episodes.
3. :func:`apply_decisions` (per batch) drops and trims frames.

A dropped episode is attributed to the first failing filter in :data:`REASONS`
order. Idle handling: leading and trailing idle stretches (>= `idle_min_frames`
frames whose state and action do not change) are trimmed, keeping the last
resting frame before motion and the first resting frame after it (frame_index
and timestamp are re-based to start at 0); an episode that is idle from start to
end, or whose remaining interior idle frames exceed `max_idle_share`, is
dropped as ``idle``. VQA rows (kind ``vqa``) only go through the image checks.

:func:`clean_table` runs all three steps in-process (tests, small data).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from syvla import constants as K
from syvla.cli import field
from syvla.data import images
from syvla.data.columns import combine, episode_bounds, vectors
from syvla.data.schema import conform

UNREADABLE, NONFINITE, UNDECODABLE, BLACK, FAILED, IDLE, TOO_SHORT, OUTLIER, DUPLICATE = (
    "unreadable", "nonfinite", "undecodable_image", "black_image", "failed", "idle", "too_short", "action_outlier",
    "duplicate",
)
# UNREADABLE: the reader could not read the episode at all (a video that does not decode, frames that
# disagree with the metadata); its error is kept in the report (DatasetReport.errors).
REASONS = (UNREADABLE, NONFINITE, UNDECODABLE, BLACK, FAILED, IDLE, TOO_SHORT, OUTLIER, DUPLICATE)
_MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation
_MEANAD_TO_STD = 1.2533  # same for the mean absolute deviation (used where MAD is 0)
_SPREAD_TO_STD = 4.6527  # q99 - q01 of a normal distribution in standard deviations


@dataclasses.dataclass(frozen=True)
class CleaningConfig:
    """Which filters run and their thresholds; every filter can be switched off."""

    drop_nonfinite: bool = field(True, "drop episodes with NaN/inf anywhere in their state or action")
    check_images: bool = field(True, "decode images, drop episodes with black/undecodable views")
    image_check_every: int = field(1, "decode every k-th frame of an episode (1 = all)")
    black_max_value: int = field(8, "a view whose brightest pixel (0..255) is <= this is black")
    max_bad_image_share: float = field(0.0, "drop if more than this share of checked frames has a bad view, in [0, 1]")
    drop_failed: bool = field(True, "drop episodes whose success is known to be False")
    min_frames: int = field(10, "episodes shorter than this after idle trimming are dropped")
    idle_min_frames: int = field(10, "K: >= K consecutive unchanged frames form an idle stretch (K >= 2)")
    idle_tolerance: float = field(1e-6, "largest absolute change of any state/action value that counts as unchanged")
    trim_idle: bool = field(True, "cut leading/trailing idle stretches (and drop all-idle episodes)")
    max_idle_share: float = field(0.5, "drop if interior idle frames exceed this share of the kept frames (1 disables)")
    outlier_z: float = field(10.0, "robust |z| (median/MAD) of any action value above this drops the episode "
                                   "(0 disables)")
    drop_duplicates: bool = field(True, "identical state/action sequences within a dataset: keep the lowest episode_id")

    def __post_init__(self):
        if self.image_check_every < 1:
            raise ValueError(f"CleaningConfig.image_check_every must be >= 1, got {self.image_check_every}")
        if not 0 <= self.black_max_value < 255:
            raise ValueError(f"CleaningConfig.black_max_value must be in [0, 255), got {self.black_max_value}")
        for name in ("max_bad_image_share", "max_idle_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CleaningConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.min_frames < 1:
            raise ValueError(f"CleaningConfig.min_frames must be >= 1, got {self.min_frames}")
        if self.idle_min_frames < 2:
            raise ValueError(f"CleaningConfig.idle_min_frames must be >= 2, got {self.idle_min_frames}")
        if self.idle_tolerance < 0:
            raise ValueError(f"CleaningConfig.idle_tolerance must be >= 0, got {self.idle_tolerance}")
        if self.outlier_z < 0:
            raise ValueError(f"CleaningConfig.outlier_z must be >= 0 (0 disables), got {self.outlier_z}")


# ---- images -----------------------------------------------------------------
def image_status(data: bytes | None, black_max_value: int) -> str | None:
    """None for a good image, else UNDECODABLE or BLACK (brightest pixel <= black_max_value)."""
    try:
        img = images.decode(data)
    except images.ImageError:
        return UNDECODABLE
    return BLACK if int(img.max(initial=0)) <= black_max_value else None


# ---- per-episode summaries ----------------------------------------------------
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field(K.DATASET, pa.string()),
        pa.field(K.EPISODE_ID, pa.int64()),
        pa.field(K.KIND, pa.string()),
        pa.field("n_frames", pa.int64()),
        pa.field("nonfinite_frames", pa.int64()),
        pa.field("image_frames_checked", pa.int64()),
        pa.field("black_frames", pa.int64()),
        pa.field("undecodable_frames", pa.int64()),
        pa.field(K.SUCCESS, pa.bool_()),
        pa.field("all_idle", pa.bool_()),
        pa.field("trim_start", pa.int64()),
        pa.field("trim_stop", pa.int64()),
        pa.field("interior_idle_frames", pa.int64()),
        pa.field("seq_hash", pa.string()),
        pa.field("action_dim", pa.int64()),
        pa.field("kept_actions", pa.list_(pa.float32())),  # flattened [kept frames, action_dim], for median/MAD
        pa.field("read_error", pa.string()),  # why the reader could not read the episode; None when it could
    ]
)


def sort_frames(table: pa.Table) -> pa.Table:
    """Rows ordered by (dataset, episode_id, frame_index); a no-op copy-free check when already ordered."""
    if table.num_rows < 2:
        return table
    ep = combine(table.column(K.EPISODE_ID)).to_numpy(zero_copy_only=False)
    fi = combine(table.column(K.FRAME_INDEX)).to_numpy(zero_copy_only=False)
    ds = pc.dictionary_encode(combine(table.column(K.DATASET))).indices.to_numpy(zero_copy_only=False)
    same_ep = (ep[1:] == ep[:-1]) & (ds[1:] == ds[:-1])
    if np.all(~same_ep | (fi[1:] > fi[:-1])) and _runs_unique(ds, ep):
        return table
    return table.sort_by([(K.DATASET, "ascending"), (K.EPISODE_ID, "ascending"), (K.FRAME_INDEX, "ascending")])


def _runs_unique(ds: np.ndarray, ep: np.ndarray) -> bool:
    starts = np.concatenate([[0], np.flatnonzero((ep[1:] != ep[:-1]) | (ds[1:] != ds[:-1])) + 1])
    keys = set(zip(ds[starts].tolist(), ep[starts].tolist()))
    return len(keys) == len(starts)


def _check_frame_index(frame_index: np.ndarray, dataset: str, episode_id: int) -> None:
    if not np.array_equal(frame_index, np.arange(len(frame_index))):
        raise ValueError(
            f"episode {dataset}/{episode_id}: frame_index must run 0..{len(frame_index) - 1} without gaps "
            f"or repeats, got {frame_index[:10].tolist()}{'...' if len(frame_index) > 10 else ''}"
        )


def idle_bounds(state: np.ndarray, action: np.ndarray, cfg: CleaningConfig) -> tuple[int, int, int, bool]:
    """(trim_start, trim_stop, interior idle frames, all_idle) of one episode; see the module docstring."""
    n = len(state)
    if n < 2:
        return 0, n, 0, False
    change = np.zeros(n, bool)  # change[t]: frame t differs from frame t-1 (frame 0 counts as a change)
    change[0] = True
    diff = np.concatenate([np.abs(np.diff(state, axis=0)), np.abs(np.diff(action, axis=0))], axis=1)
    change[1:] = ~(np.nan_to_num(diff, nan=np.inf).max(axis=1, initial=0.0) <= cfg.idle_tolerance)
    # A run of unchanged frames t..u (change[t..u] False) means frames t-1..u are identical: u-t+2 frames.
    starts = np.flatnonzero(change)
    stops = np.concatenate([starts[1:], [n]])  # [start, stop) = one "segment": a change followed by repeats
    seg_len = stops - starts
    idle = seg_len >= cfg.idle_min_frames
    if len(starts) == 1 and idle[0]:
        return 0, n, n, True
    lo, hi = 0, n
    first, last = 0, len(starts) - 1
    if cfg.trim_idle:
        if idle[0]:
            lo = int(stops[0] - 1)  # keep the last resting frame before motion
            first = 1
        if idle[-1] and last >= first:
            hi = int(starts[-1] + 1)  # keep the first resting frame after motion
            last -= 1
    interior = int(seg_len[first : last + 1][idle[first : last + 1]].sum()) if last >= first else 0
    return lo, hi, interior, False


def _sequence_hash(state: np.ndarray, action: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for x in (state, action):
        x = np.ascontiguousarray(x, np.float32)
        h.update(str(x.shape).encode())
        h.update(x.tobytes())
    return h.hexdigest()


def summarize_episodes(table: pa.Table, cfg: CleaningConfig) -> pa.Table:
    """One SUMMARY_SCHEMA row per episode of `table`, which must hold whole episodes."""
    table = sort_frames(table)
    rows, kept = [], []
    for start, stop in episode_bounds(table, K.DATASET, K.EPISODE_ID):
        row, actions = _summarize(table.slice(start, stop - start), cfg)
        rows.append(row)
        kept.append(actions.reshape(-1))
    if not rows:
        return SUMMARY_SCHEMA.empty_table()
    offsets = np.concatenate([[0], np.cumsum([len(k) for k in kept])]).astype(np.int32)
    cols = {name: pa.array([r[name] for r in rows], type=SUMMARY_SCHEMA.field(name).type)
            for name in SUMMARY_SCHEMA.names if name != "kept_actions"}
    cols["kept_actions"] = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(np.concatenate(kept).astype(np.float32), type=pa.float32()))
    return pa.Table.from_pydict(cols, schema=SUMMARY_SCHEMA)


def unreadable_summaries(episodes: Iterable) -> pa.Table:
    """SUMMARY_SCHEMA rows for robot episodes the reader could not read (syvla.data.readers.UnreadableEpisode:
    dataset, episode_id, length, error); decide() drops them as UNREADABLE with their error."""
    rows = []
    for e in episodes:
        row = dict.fromkeys(SUMMARY_SCHEMA.names)
        row.update({K.DATASET: e.dataset, K.EPISODE_ID: e.episode_id, K.KIND: K.KIND_ROBOT, "n_frames": e.length,
                    "nonfinite_frames": 0, "image_frames_checked": 0, "black_frames": 0, "undecodable_frames": 0,
                    "all_idle": False, "trim_start": 0, "trim_stop": e.length, "interior_idle_frames": 0,
                    "action_dim": 0, "kept_actions": [], "read_error": e.error})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA) if rows else SUMMARY_SCHEMA.empty_table()


def _summarize(ep: pa.Table, cfg: CleaningConfig) -> tuple[dict, np.ndarray]:
    dataset = ep.column(K.DATASET)[0].as_py()
    episode_id = ep.column(K.EPISODE_ID)[0].as_py()
    kinds = set(ep.column(K.KIND).to_pylist())
    if len(kinds) != 1:
        raise ValueError(f"episode {dataset}/{episode_id} mixes kinds {sorted(kinds)}")
    kind = kinds.pop()
    _check_frame_index(combine(ep.column(K.FRAME_INDEX)).to_numpy(zero_copy_only=False), dataset, episode_id)
    n = ep.num_rows
    out = dict.fromkeys(SUMMARY_SCHEMA.names)
    out.update({K.DATASET: dataset, K.EPISODE_ID: episode_id, K.KIND: kind, "n_frames": n,
                "nonfinite_frames": 0, "image_frames_checked": 0, "black_frames": 0, "undecodable_frames": 0,
                "all_idle": False, "trim_start": 0, "trim_stop": n, "interior_idle_frames": 0,
                "action_dim": 0})
    if cfg.check_images:
        images = ep.column(K.IMAGES).to_pylist()
        for t in range(0, n, cfg.image_check_every):
            status = {image_status(b, cfg.black_max_value) for b in images[t]} if images[t] else {UNDECODABLE}
            out["image_frames_checked"] += 1
            if UNDECODABLE in status:
                out["undecodable_frames"] += 1
            elif BLACK in status:
                out["black_frames"] += 1
    if kind != K.KIND_ROBOT:
        return out, np.zeros(0, np.float32)
    state, action = vectors(ep, K.STATE), vectors(ep, K.ACTION)
    if state.shape[1] == 0 or action.shape[1] == 0:
        raise ValueError(f"robot episode {dataset}/{episode_id} has empty state or action vectors")
    finite = np.isfinite(state).all(axis=1) & np.isfinite(action).all(axis=1)
    success = [s for s in ep.column(K.SUCCESS).to_pylist() if s is not None]
    lo, hi, interior, all_idle = idle_bounds(state, action, cfg)
    out.update({
        "nonfinite_frames": int((~finite).sum()),
        K.SUCCESS: success[-1] if success else None,  # the last known value is the episode's outcome
        "all_idle": bool(all_idle and cfg.trim_idle), "trim_start": lo, "trim_stop": hi,
        "interior_idle_frames": interior,
        "seq_hash": _sequence_hash(state, action),
        "action_dim": action.shape[1],
    })
    return out, action[lo:hi][finite[lo:hi]]


# ---- decisions ------------------------------------------------------------------
DECISION_SCHEMA = pa.schema(
    [
        pa.field(K.DATASET, pa.string()),
        pa.field(K.EPISODE_ID, pa.int64()),
        pa.field("n_frames", pa.int64()),
        pa.field("keep", pa.bool_()),
        pa.field("trim_start", pa.int64()),
        pa.field("trim_stop", pa.int64()),
        pa.field("reason", pa.string()),
    ]
)


@dataclasses.dataclass
class DatasetReport:
    episodes_in: int = 0
    episodes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    frames_trimmed: int = 0  # idle frames cut from kept episodes
    dropped: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # reason -> episode ids
    errors: dict[int, str] = dataclasses.field(default_factory=dict)  # episode id -> why it was UNREADABLE


@dataclasses.dataclass
class CleaningReport:
    """Counts and episode ids per drop reason, per dataset; JSON round trip and a readable table."""

    datasets: dict[str, DatasetReport] = dataclasses.field(default_factory=dict)

    def total(self, field: str) -> int:
        return sum(getattr(d, field) for d in self.datasets.values())

    def dropped_count(self, reason: str, dataset: str | None = None) -> int:
        reports = [self.datasets[dataset]] if dataset else self.datasets.values()
        return sum(len(d.dropped.get(reason, [])) for d in reports)

    def to_dict(self) -> dict:
        return {"reasons": list(REASONS),
                "datasets": {name: dataclasses.asdict(d) for name, d in sorted(self.datasets.items())}}

    @classmethod
    def from_dict(cls, d: dict) -> "CleaningReport":
        datasets = {}
        for name, v in d["datasets"].items():
            v = dict(v)
            v["errors"] = {int(k): e for k, e in v.get("errors", {}).items()}  # JSON keys are strings
            datasets[name] = DatasetReport(**v)
        return cls(datasets)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "CleaningReport":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def table(self) -> str:
        """Metrics as rows, datasets (and a total) as columns: stays narrow however many reasons there are."""
        names = sorted(self.datasets)
        metrics = [("episodes in", lambda d: d.episodes_in), ("episodes out", lambda d: d.episodes_out),
                   ("frames in", lambda d: d.frames_in), ("frames out", lambda d: d.frames_out),
                   ("frames trimmed (idle)", lambda d: d.frames_trimmed)]
        metrics += [(f"dropped: {r}", lambda d, r=r: len(d.dropped.get(r, []))) for r in REASONS]
        head = ["", *names, *(["total"] if len(names) > 1 else [])]
        cells = [head]
        for label, get in metrics:
            vals = [get(self.datasets[n]) for n in names]
            cells.append([label, *map(str, vals), *([str(sum(vals))] if len(names) > 1 else [])])
        widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in cells]
        lines.insert(1, "-" * len(lines[0]))
        for n in names:
            for episode, error in sorted(self.datasets[n].errors.items()):
                lines.append(f"{UNREADABLE} {n}/{episode}: {error}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def robust_action_stats(actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension median and robust scale.

    scale = max(1.4826 * MAD, (q99 - q01) / 4.6527): the MAD-based standard deviation, floored by
    the one a normal distribution with the same 1-99% spread would have. MAD alone collapses
    when a dimension sits at one value most of the time (a resting axis, a binary gripper):
    on Meta-World expert data it flagged 2 of 8 successful episodes whose actions stayed within
    [-1, 1]. Where both are 0, 1.2533 * the mean absolute deviation; a scale of 0 means the
    dimension is constant."""
    med = np.median(actions, axis=0)
    dev = np.abs(actions - med)
    q01, q99 = np.quantile(actions, [0.01, 0.99], axis=0)
    scale = np.maximum(_MAD_TO_STD * np.median(dev, axis=0), (q99 - q01) / _SPREAD_TO_STD)
    zero = scale <= 0
    scale[zero] = _MEANAD_TO_STD * dev.mean(axis=0)[zero]
    return med, scale


def _first_reason(s: dict, cfg: CleaningConfig) -> str | None:
    if s["read_error"] is not None:
        return UNREADABLE
    if cfg.drop_nonfinite and s["nonfinite_frames"] > 0:
        return NONFINITE
    checked = s["image_frames_checked"]
    if cfg.check_images and checked and (s["black_frames"] + s["undecodable_frames"]) / checked > cfg.max_bad_image_share:
        return UNDECODABLE if s["undecodable_frames"] else BLACK
    if s[K.KIND] != K.KIND_ROBOT:
        return None
    if cfg.drop_failed and s[K.SUCCESS] is False:
        return FAILED
    kept = s["trim_stop"] - s["trim_start"]
    if s["all_idle"] or (kept > 0 and s["interior_idle_frames"] / kept > cfg.max_idle_share):
        return IDLE
    if kept < cfg.min_frames:
        return TOO_SHORT
    return None


def decide(summaries: pa.Table, cfg: CleaningConfig) -> tuple[pa.Table, CleaningReport]:
    """Keep/trim decision per episode (DECISION_SCHEMA) and the report, from all episodes' summaries."""
    keys = list(zip(summaries.column(K.DATASET).to_pylist(), summaries.column(K.EPISODE_ID).to_pylist()))
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"episode {dup[0]}/{dup[1]} appears in more than one summary: its frames were split "
                         f"across batches or its episode_id is not unique within the dataset")
    rows = summaries.drop_columns(["kept_actions"]).to_pylist()
    kept_col = combine(summaries.column("kept_actions"))
    kept_offsets = kept_col.offsets.to_numpy()
    kept_values = kept_col.values.to_numpy(zero_copy_only=False)
    reasons = [_first_reason(s, cfg) for s in rows]

    if cfg.outlier_z > 0:
        by_dataset: dict[str, list[int]] = {}
        for i, s in enumerate(rows):
            if reasons[i] is None and s[K.KIND] == K.KIND_ROBOT:
                by_dataset.setdefault(s[K.DATASET], []).append(i)
        for name, idx in by_dataset.items():
            dims = {rows[i]["action_dim"] for i in idx}
            if len(dims) != 1:
                raise ValueError(f"dataset {name!r} has episodes with different action dims {sorted(dims)}")
            dim = dims.pop()
            acts = [kept_values[kept_offsets[i] : kept_offsets[i + 1]].astype(np.float64).reshape(-1, dim) for i in idx]
            med, scale = robust_action_stats(np.concatenate(acts))
            safe = np.where(scale > 0, scale, 1.0)
            for i, a in zip(idx, acts):
                z = np.abs(a - med) / safe
                z[:, scale <= 0] = np.where(a[:, scale <= 0] != med[scale <= 0], np.inf, 0.0)
                if len(z) and z.max() > cfg.outlier_z:
                    reasons[i] = OUTLIER

    if cfg.drop_duplicates:
        seen: dict[tuple[str, str], int] = {}
        order = sorted(range(len(rows)), key=lambda i: (rows[i][K.DATASET], rows[i][K.EPISODE_ID]))
        for i in order:
            s = rows[i]
            if reasons[i] is not None or s[K.KIND] != K.KIND_ROBOT:
                continue
            key = (s[K.DATASET], s["seq_hash"])
            if key in seen:
                reasons[i] = DUPLICATE
            else:
                seen[key] = s[K.EPISODE_ID]

    report = CleaningReport()
    out = []
    for s, reason in zip(rows, reasons):
        d = report.datasets.setdefault(s[K.DATASET], DatasetReport())
        n, lo, hi = s["n_frames"], s["trim_start"], s["trim_stop"]
        d.episodes_in += 1
        d.frames_in += n
        if reason is None:
            d.episodes_out += 1
            d.frames_out += hi - lo
            d.frames_trimmed += n - (hi - lo)
        else:
            d.dropped.setdefault(reason, []).append(s[K.EPISODE_ID])
            if reason == UNREADABLE:
                d.errors[s[K.EPISODE_ID]] = s["read_error"]
        out.append({K.DATASET: s[K.DATASET], K.EPISODE_ID: s[K.EPISODE_ID], "n_frames": n,
                    "keep": reason is None, "trim_start": lo, "trim_stop": hi, "reason": reason})
    for d in report.datasets.values():
        d.dropped = {r: sorted(d.dropped[r]) for r in REASONS if r in d.dropped}
    decisions = pa.Table.from_pylist(out, schema=DECISION_SCHEMA) if out else DECISION_SCHEMA.empty_table()
    return decisions, report


def decision_lookup(decisions: pa.Table) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(dataset, episode_id) -> (n_frames, trim_start, trim_stop) for kept episodes, -1 bounds for dropped."""
    out = {}
    for d in decisions.to_pylist():
        bounds = (d["trim_start"], d["trim_stop"]) if d["keep"] else (-1, -1)
        out[(d[K.DATASET], d[K.EPISODE_ID])] = (d["n_frames"], *bounds)
    return out


def apply_decisions(table: pa.Table, lookup: dict[tuple[str, int], tuple[int, int, int]]) -> pa.Table:
    """Drop dropped episodes, trim kept ones and re-base their frame_index/timestamp to start at 0.

    `table` must hold whole episodes (checked against the decision's frame count)."""
    table = sort_frames(table)
    pieces = []
    for start, stop in episode_bounds(table, K.DATASET, K.EPISODE_ID):
        key = (table.column(K.DATASET)[start].as_py(), table.column(K.EPISODE_ID)[start].as_py())
        if key not in lookup:
            raise KeyError(f"no cleaning decision for episode {key[0]}/{key[1]}")
        n, lo, hi = lookup[key]
        if stop - start != n:
            raise ValueError(f"episode {key[0]}/{key[1]} has {stop - start} frames in this batch but {n} were "
                             f"summarized: batches must hold whole episodes")
        if lo < 0:
            continue
        ep = table.slice(start + lo, hi - lo)
        if lo:
            ts = combine(ep.column(K.TIMESTAMP)).to_numpy(zero_copy_only=False)
            ep = ep.set_column(ep.schema.get_field_index(K.FRAME_INDEX), K.FRAME_INDEX,
                               pa.array(np.arange(hi - lo, dtype=np.int64)))
            ep = ep.set_column(ep.schema.get_field_index(K.TIMESTAMP), K.TIMESTAMP, pa.array(ts - ts[0]))
        pieces.append(ep)
    if not pieces:
        return table.schema.empty_table()
    return pa.concat_tables(pieces).combine_chunks()


def clean_table(tables: pa.Table | Iterable[pa.Table], cfg: CleaningConfig = CleaningConfig()) -> tuple[pa.Table, CleaningReport]:
    """In-process cleaning of whole episodes: summarize -> decide -> apply."""
    table = conform(tables) if isinstance(tables, pa.Table) else pa.concat_tables([conform(t) for t in tables])
    table = sort_frames(table)
    decisions, report = decide(summarize_episodes(table, cfg), cfg)
    return apply_decisions(table, decision_lookup(decisions)), report


__all__ = [
    "CleaningConfig", "CleaningReport", "DatasetReport", "REASONS", "SUMMARY_SCHEMA", "DECISION_SCHEMA",
    "summarize_episodes", "unreadable_summaries", "decide", "decision_lookup", "apply_decisions", "clean_table", "idle_bounds",
    "image_status", "robust_action_stats", "sort_frames",
]


def kept_robot_frames(summaries: pa.Table, decisions: pa.Table) -> int:
    """Robot frames the decisions keep (after trimming), from the episode summaries alone."""
    robot = pc.equal(summaries.column(K.KIND), K.KIND_ROBOT).to_numpy(zero_copy_only=False)
    keys = {(d, e) for d, e, r in zip(summaries.column(K.DATASET).to_pylist(), summaries.column(K.EPISODE_ID).to_pylist(), robot) if r}
    return sum(d["trim_stop"] - d["trim_start"] for d in decisions.to_pylist()
               if d["keep"] and (d[K.DATASET], d[K.EPISODE_ID]) in keys)
