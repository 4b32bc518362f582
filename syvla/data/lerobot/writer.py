"""FRAME_SCHEMA episodes -> a LeRobotDataset folder (v3.0 by default, or v2.1).

Our extras, so that writing then reading our own frames is lossless (except
video, which is lossy): a per-frame string feature "cot", per-episode columns
"success" and "source_episode_id" in the episode metadata, and
info.json["syvla"] = {"dataset": name, ...}. Other readers ignore them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from syvla import constants as K
from syvla.data import images
from syvla.data.lerobot.layout import (ACTION_KEY, COT_KEY, DEFAULT_CHUNKS_SIZE, INFO_FILE, SOURCE_EPISODE_COLUMN,
                                       STATE_KEY, STATS_FILE, SUCCESS_COLUMN, V21, V30, WRITABLE_VERSIONS, FileLoc,
                                       LeRobotLayout, video_key)
from syvla.data.lerobot.stats import IMAGE_STATS_FRAMES, RunningStats, image_stats, merge_image_stats
from syvla.data.lerobot.video import CODECS, VideoWriter
from syvla.data.schema import SchemaError, conform

DEFAULT_ROWS_PER_FILE = 50_000  # v3.0: start a new data/video file after this many frames

_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # HF datasets Image()


@dataclasses.dataclass(frozen=True)
class LeRobotWriteOptions:
    """How `LeRobotWriter` lays out a dataset."""

    version: str = V30  # "v3.0" or "v2.1"
    fps: float | None = None  # frames per second; None = inferred from the first episode's timestamps
    video: bool = True  # True: cameras as mp4 video features; False: PNG bytes in the parquet ("image" features)
    codec: str = "h264"  # "h264" (fast on CPU) or "av1" (LeRobot's default, needs an AV1 encoder)
    crf: int = 18  # encoder quality (lower = better; ~1-2 gray levels mean error at 64 px with h264)
    gop: int = 2  # keyframe interval in frames: short = cheap seeks to any episode
    robot_type: str = "unknown"
    chunks_size: int = DEFAULT_CHUNKS_SIZE
    rows_per_file: int = DEFAULT_ROWS_PER_FILE  # v3.0 only

    def __post_init__(self):
        if self.version not in WRITABLE_VERSIONS:
            raise ValueError(f"LeRobotWriteOptions.version must be {V21!r} or {V30!r}, got {self.version!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"LeRobotWriteOptions.fps must be > 0, got {self.fps}")
        if self.codec not in CODECS:
            raise ValueError(f"LeRobotWriteOptions.codec must be 'h264' or 'av1', got {self.codec!r}")
        if not 0 <= self.crf <= 63:
            raise ValueError(f"LeRobotWriteOptions.crf must be in 0..63, got {self.crf}")
        if self.gop < 1 or self.chunks_size < 1 or self.rows_per_file < 1:
            raise ValueError("LeRobotWriteOptions.gop, chunks_size and rows_per_file must be >= 1")


class LeRobotWriter:
    """Streams FRAME_SCHEMA episodes into a LeRobotDataset folder.

    with LeRobotWriter(root, LeRobotWriteOptions(), dataset="metaworld") as w:
        for table in episodes:          # one pyarrow table per episode
            w.add_episode(table)

    Writes into a temporary sibling folder and renames it to `root` on close,
    so a crashed run never leaves a folder that looks complete.
    """

    def __init__(self, root: str | os.PathLike, options: LeRobotWriteOptions = LeRobotWriteOptions(),
                 dataset: str | None = None, extra_info: dict | None = None, overwrite: bool = False):
        self.root = Path(root)
        self.opt = options
        self.layout = LeRobotLayout.new(options.version, options.video, options.chunks_size)
        self.dataset = dataset
        self.extra_info = dict(extra_info or {})
        if self.root.exists() and not overwrite:
            raise FileExistsError(f"{self.root} exists; pass overwrite=True to replace it")
        self.overwrite = overwrite
        self.tmp = self.root.parent / f".{self.root.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self.fps = options.fps
        self.views: list[str] | None = None
        self.image_hw: dict[str, tuple[int, int]] = {}
        self.state_dim = self.action_dim = None
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []
        self.total_frames = 0
        self.stats = {STATE_KEY: RunningStats(), ACTION_KEY: RunningStats(), "timestamp": RunningStats(),
                      "frame_index": RunningStats(), "episode_index": RunningStats(), "index": RunningStats(),
                      "task_index": RunningStats()}
        self.image_stats: dict[str, list[dict]] = {}
        # The open data/video files and the frames in them (v3.0 appends episodes until rows_per_file).
        self.loc: FileLoc | None = None
        self.file_rows = 0
        self._data_writer: pq.ParquetWriter | None = None
        self._videos: dict[str, VideoWriter] = {}
        self._closed = False

    # -- layout of the dataset, fixed by the first episode
    def _init_layout(self, t: pa.Table, source: str) -> None:
        self.views = list(t.column(K.IMAGE_VIEWS)[0].as_py())
        if len(set(self.views)) != len(self.views):
            raise SchemaError(f"{source}: field {K.IMAGE_VIEWS!r} repeats a camera: {self.views}")
        first = t.column(K.IMAGES)[0].as_py()
        for v, data in zip(self.views, first):
            self.image_hw[v] = images.image_size(data, f"{source} view {v!r}")
        self.state_dim = len(t.column(K.STATE)[0])
        self.action_dim = len(t.column(K.ACTION)[0])
        if self.dataset is None:
            self.dataset = t.column(K.DATASET)[0].as_py()
        if self.fps is None:
            ts = t.column(K.TIMESTAMP).to_numpy()
            if len(ts) < 2 or not np.all(np.diff(ts) > 0):
                raise SchemaError(f"{source}: cannot infer fps from field {K.TIMESTAMP!r}; pass LeRobotWriteOptions(fps=...)")
            self.fps = float(round(1.0 / float(np.median(np.diff(ts))), 6))

    def _check_episode(self, t: pa.Table, source: str) -> None:
        ids = _unique(t.column(K.EPISODE_ID))
        if len(ids) != 1:
            raise SchemaError(f"{source}: an episode table must hold one {K.EPISODE_ID!r}, got {ids[:5]}")
        kinds = _unique(t.column(K.KIND))
        if kinds != [K.KIND_ROBOT]:
            raise SchemaError(f"{source}: field {K.KIND!r} must be {K.KIND_ROBOT!r} for LeRobot, got {kinds}")
        fi = t.column(K.FRAME_INDEX).to_numpy()
        if not np.array_equal(fi, np.arange(len(fi))):
            raise SchemaError(f"{source}: field {K.FRAME_INDEX!r} must be 0..{len(fi) - 1} in order")
        for name, dim in ((K.STATE, self.state_dim), (K.ACTION, self.action_dim)):
            lens = np.unique(t.column(name).combine_chunks().value_lengths().to_numpy())
            if lens.tolist() != [dim]:
                raise SchemaError(f"{source}: field {name!r} has lengths {lens.tolist()}, expected {dim} in every row")
        for row_views in _unique_lists(t.column(K.IMAGE_VIEWS)):
            if row_views != self.views:
                raise SchemaError(f"{source}: field {K.IMAGE_VIEWS!r} is {row_views}, expected {self.views} in every row")
        ts = t.column(K.TIMESTAMP).to_numpy()
        drift = np.abs(ts - fi / self.fps)
        if drift.size and drift.max() > 0.25 / self.fps:
            bad = int(np.argmax(drift))
            raise SchemaError(
                f"{source}: field {K.TIMESTAMP!r} = {ts[bad]:.4f} s at frame {bad} is not frame_index / fps "
                f"({bad / self.fps:.4f} s at {self.fps} fps); constant-rate video needs regular timestamps"
            )

    def add_episode(self, table: pa.Table) -> None:
        if self._closed:
            raise RuntimeError("LeRobotWriter is closed")
        ep = len(self.episodes)
        source = f"episode #{ep}"
        t = conform(table, source)
        if t.num_rows == 0:
            raise SchemaError(f"{source}: empty episode table")
        if self.views is None:
            self._init_layout(t, source)
        self._check_episode(t, source)
        n = t.num_rows
        self._open_files_for(ep, n)
        tasks = t.column(K.TASK).to_pylist()
        for task in tasks:
            self.tasks.setdefault(task, len(self.tasks))
        task_index = np.array([self.tasks[x] for x in tasks], dtype=np.int64)
        state = _matrix(t.column(K.STATE), n)
        action = _matrix(t.column(K.ACTION), n)
        index0 = self.total_frames
        cols = {
            STATE_KEY: pa.array(list(state), type=pa.list_(pa.float32())),
            ACTION_KEY: pa.array(list(action), type=pa.list_(pa.float32())),
            "timestamp": pa.array(t.column(K.TIMESTAMP).to_numpy().astype(np.float32)),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
            "episode_index": pa.array(np.full(n, ep, dtype=np.int64)),
            "index": pa.array(np.arange(index0, index0 + n, dtype=np.int64)),
            "task_index": pa.array(task_index),
            COT_KEY: t.column(K.COT).combine_chunks(),
        }
        meta: dict = {}
        for v, blobs in zip(self.views, zip(*t.column(K.IMAGES).to_pylist())):
            key = video_key(v)
            if self.opt.video:
                meta.update(self._add_video(key, v, blobs, source))
            else:
                cols[key] = self._image_column(key, v, blobs, source)
        self._add_data(pa.table(cols))
        meta.update({"data/chunk_index": self.loc.chunk, "data/file_index": self.loc.file})
        ep_stats = {STATE_KEY: RunningStats(), ACTION_KEY: RunningStats()}
        ep_stats[STATE_KEY].add(state)
        ep_stats[ACTION_KEY].add(action)
        for name, x in ((STATE_KEY, state), (ACTION_KEY, action), ("timestamp", cols["timestamp"].to_numpy()),
                        ("frame_index", np.arange(n)), ("episode_index", np.full(n, ep)),
                        ("index", np.arange(index0, index0 + n)), ("task_index", task_index)):
            self.stats[name].add(x)
        success = _unique(t.column(K.SUCCESS))
        self.episodes.append({
            "episode_index": ep,
            "tasks": list(dict.fromkeys(tasks)),
            "length": n,
            "dataset_from_index": index0,
            "dataset_to_index": index0 + n,
            **meta,
            SUCCESS_COLUMN: success[0] if len(success) == 1 else None,
            SOURCE_EPISODE_COLUMN: int(t.column(K.EPISODE_ID)[0].as_py()),
            "_stats": {k: s.to_dict(quantiles=False) for k, s in ep_stats.items()},
            "_image_stats": {k: v[-1] for k, v in self.image_stats.items()},
        })
        self.total_frames += n

    # -- per-episode pieces
    def _open_files_for(self, ep: int, rows: int) -> None:
        """Move on to the files that episode `ep` (`rows` frames) goes to, closing the previous ones."""
        loc = self.layout.next_loc(self.loc, ep, self.file_rows, rows, self.opt.rows_per_file)
        if loc != self.loc:
            self._close_files()
            self.loc, self.file_rows = loc, 0

    @staticmethod
    def _sample_at(n: int) -> set[int]:
        """Frames of an episode sampled for the image statistics."""
        return set(np.linspace(0, n - 1, min(n, IMAGE_STATS_FRAMES)).astype(int).tolist())

    def _add_video(self, key: str, view: str, blobs, source: str) -> dict:
        """Append one camera's frames to its video; returns the episode's video metadata fields."""
        n = len(blobs)
        sample_at, sampled = self._sample_at(n), []
        writer = self._video_writer(key, view)
        start = writer.frames
        for i, data in enumerate(blobs):
            img = images.decode(data, f"{source} frame {i} view {view!r}")
            writer.add(img)
            if i in sample_at:
                sampled.append(img)
        self._add_image_stats(key, view, sampled, source)
        return {f"videos/{key}/chunk_index": self.loc.chunk, f"videos/{key}/file_index": self.loc.file,
                f"videos/{key}/from_timestamp": start / self.fps, f"videos/{key}/to_timestamp": (start + n) / self.fps}

    def _image_column(self, key: str, view: str, blobs, source: str) -> pa.Array:
        """One camera's frames as an image (PNG struct) column."""
        sampled = [images.decode(blobs[i], f"{source} frame {i} view {view!r}") for i in sorted(self._sample_at(len(blobs)))]
        self._add_image_stats(key, view, sampled, source)
        # PNG/JPEG bytes go in as they are; anything else Pillow reads is stored as PNG.
        blobs = [b if images.image_format(b) else images.encode_png(images.decode(b, f"{source} frame {i} view {view!r}"))
                 for i, b in enumerate(blobs)]
        return pa.array([{"bytes": b, "path": None} for b in blobs], type=_IMAGE_STRUCT)

    def _add_image_stats(self, key: str, view: str, sampled: list[np.ndarray], source: str) -> None:
        for s in sampled:
            if s.shape[:2] != self.image_hw[view]:
                raise SchemaError(f"{source}: view {view!r} has size {s.shape[:2]}, expected {self.image_hw[view]}")
        self.image_stats.setdefault(key, []).append(image_stats(sampled))

    def _add_data(self, data: pa.Table) -> None:
        if self._data_writer is None:
            path = self.tmp / self.layout.data_file(self.loc)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(str(path), data.schema)
        self._data_writer.write_table(data)
        self.file_rows += data.num_rows

    def _video_writer(self, key: str, view: str) -> VideoWriter:
        if key not in self._videos:
            h, w = self.image_hw[view]
            self._videos[key] = VideoWriter(self.tmp / self.layout.video_file(key, self.loc), self.fps, h, w,
                                            self.opt.codec, self.opt.crf, self.opt.gop)
        return self._videos[key]

    def _close_files(self) -> None:
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        for w in self._videos.values():
            w.close()
        self._videos = {}

    # -- metadata
    def _features(self) -> dict:
        f = {}
        for v in self.views:
            h, w = self.image_hw[v]
            feat = {"dtype": "video" if self.opt.video else "image", "shape": [h, w, 3],
                    "names": ["height", "width", "channels"]}
            if self.opt.video:
                feat["info"] = {"video.height": h, "video.width": w, "video.codec": self.opt.codec,
                                "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": self.fps,
                                "video.channels": 3, "has_audio": False}
            f[video_key(v)] = feat
        f[STATE_KEY] = {"dtype": "float32", "shape": [self.state_dim], "names": None}
        f[ACTION_KEY] = {"dtype": "float32", "shape": [self.action_dim], "names": None}
        for name in ("timestamp",):
            f[name] = {"dtype": "float32", "shape": [1], "names": None}
        for name in ("frame_index", "episode_index", "index", "task_index"):
            f[name] = {"dtype": "int64", "shape": [1], "names": None}
        f[COT_KEY] = {"dtype": "string", "shape": [1], "names": None}
        return f

    def close(self) -> Path:
        if self._closed:
            return self.root
        self._closed = True
        self._close_files()
        if not self.episodes:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise SchemaError(f"no episodes were written to {self.root}")
        meta = self.tmp / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        n_ep = len(self.episodes)
        info = {
            "codebase_version": self.opt.version,
            "robot_type": self.opt.robot_type,
            "total_episodes": n_ep,
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": self.opt.chunks_size,
            "fps": self.fps,
            "splits": {"train": f"0:{n_ep}"},
            **self.layout.info_fields(n_ep, len(self.views)),
        }
        info["features"] = self._features()
        info["syvla"] = {"dataset": self.dataset, **self.extra_info}
        stats = {k: s.to_dict(quantiles=True) for k, s in self.stats.items()}
        for key, parts in self.image_stats.items():
            stats[key] = merge_image_stats(parts)
        tasks_sorted = sorted(self.tasks.items(), key=lambda kv: kv[1])
        if self.layout.episodes_share_files:
            self._write_parquet_meta(tasks_sorted)
        else:
            self._write_jsonl_meta(tasks_sorted)
        (self.tmp / STATS_FILE).write_text(json.dumps(stats, indent=2))
        (self.tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
        if self.root.exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.root} appeared while writing; data left in {self.tmp}")
            shutil.rmtree(self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.root)
        return self.root

    def _write_parquet_meta(self, tasks_sorted) -> None:
        """v3.0: tasks.parquet and one episode metadata file with the per-episode stats inline."""
        pq.write_table(pa.table({"task_index": pa.array([i for _, i in tasks_sorted], pa.int64()),
                                 "task": [t for t, _ in tasks_sorted]}), str(self.tmp / self.layout.tasks_file))
        meta_loc = FileLoc(0, 0)
        rows = []
        for e in self.episodes:
            row = {k: v for k, v in e.items() if not k.startswith("_")}
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = meta_loc.chunk, meta_loc.file
            for feat, st in {**e["_stats"], **e["_image_stats"]}.items():
                for name, val in st.items():
                    row[f"stats/{feat}/{name}"] = np.asarray(val, dtype=np.float64).reshape(-1).tolist()
            rows.append(row)
        path = self.tmp / self.layout.episodes_meta_file(meta_loc)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows)
        if SUCCESS_COLUMN in table.column_names and table.column(SUCCESS_COLUMN).type == pa.null():
            table = table.set_column(table.column_names.index(SUCCESS_COLUMN), SUCCESS_COLUMN,
                                     pa.array([None] * table.num_rows, pa.bool_()))
        pq.write_table(table, str(path))

    def _write_jsonl_meta(self, tasks_sorted) -> None:
        """v2.1: tasks.jsonl, episodes.jsonl and episodes_stats.jsonl."""
        with open(self.tmp / self.layout.tasks_file, "w") as f:
            for task, i in tasks_sorted:
                f.write(json.dumps({"task_index": i, "task": task}) + "\n")
        with open(self.tmp / self.layout.episodes_meta_file(), "w") as f, open(self.tmp / self.layout.episodes_stats_file, "w") as g:
            for e in self.episodes:
                f.write(json.dumps({"episode_index": e["episode_index"], "tasks": e["tasks"], "length": e["length"],
                                    SUCCESS_COLUMN: e[SUCCESS_COLUMN], SOURCE_EPISODE_COLUMN: e[SOURCE_EPISODE_COLUMN]}) + "\n")
                g.write(json.dumps({"episode_index": e["episode_index"], "stats": {**e["_stats"], **e["_image_stats"]}}) + "\n")

    def abort(self) -> None:
        """Drop everything written so far (the temporary folder)."""
        self._closed = True
        try:
            self._close_files()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _matrix(col, n: int) -> np.ndarray:
    """A list<float> column of n rows as float32 [n, dim]."""
    return np.asarray(col.combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float32).reshape(n, -1)


def _unique(col) -> list:
    return list(dict.fromkeys(col.to_pylist()))


def _unique_lists(col) -> list[list]:
    seen = []
    for x in col.to_pylist():
        if x not in seen:
            seen.append(x)
    return seen


def write_lerobot(episodes: Iterable[pa.Table], root: str | os.PathLike, options: LeRobotWriteOptions = LeRobotWriteOptions(),
                  dataset: str | None = None, extra_info: dict | None = None, overwrite: bool = False) -> Path:
    """Write per-episode FRAME_SCHEMA tables as a LeRobotDataset (v3.0 by default). Returns the folder.

    A single table holding several episodes is split by episode_id.
    """
    with LeRobotWriter(root, options, dataset=dataset, extra_info=extra_info, overwrite=overwrite) as w:
        for table in episodes:
            for ep_table in split_episodes(table):
                w.add_episode(ep_table)
    return Path(root)


def split_episodes(table: pa.Table) -> list[pa.Table]:
    """Split a frame table into one table per episode_id (order of first appearance)."""
    ids = table.column(K.EPISODE_ID).to_numpy()
    if len(ids) == 0 or (ids == ids[0]).all():
        return [table]
    out = []
    for e in dict.fromkeys(ids.tolist()):
        out.append(table.filter(pa.array(ids == e)))
    return out
