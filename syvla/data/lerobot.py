"""LeRobotDataset v2.1 / v3.0: a writer (frames -> folder) and readers (folder -> frames).

Written from the format's layout (../shared/notes/formats.md) with pyarrow and
PyAV only: the `lerobot` package pins an old CUDA torch. No Ray here.

Layouts
  v3.0: data/chunk-XXX/file-XXX.parquet (many episodes per file),
        videos/<video_key>/chunk-XXX/file-XXX.mp4 (episodes back to back),
        meta/info.json, meta/tasks.parquet, meta/stats.json,
        meta/episodes/chunk-XXX/file-XXX.parquet (one row per episode: data
        file + row range, per video its file and from/to timestamps, stats).
  v2.1: data/chunk-XXX/episode_XXXXXX.parquet, videos/chunk-XXX/<video_key>/
        episode_XXXXXX.mp4, meta/episodes.jsonl, meta/tasks.jsonl,
        meta/episodes_stats.jsonl.

Our extras, so that writing then reading our own frames is lossless (except
video, which is lossy): a per-frame string feature "cot", per-episode columns
"success" and "source_episode_id" in the episode metadata, and
info.json["syvla"] = {"dataset": name, ...}. Other readers ignore them.

Video: h264 by default (libx264 encodes ~10x faster than AV1 on a CPU);
codec="av1" uses SVT-AV1 / libaom when the bundled FFmpeg has one
(`available_av1_encoder()`). Both decode through PyAV (dav1d for AV1).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from syvla import constants as K
from syvla.data import images
from syvla.data.schema import SchemaError, conform

V21, V30 = "v2.1", "v3.0"
SUPPORTED_VERSIONS = ("v2.0", V21, V30)  # v2.0 = v2.1 layout with a global meta/stats.json only

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_KEY_PREFIX = "observation.images."
COT_KEY = "cot"  # our per-frame chain-of-thought text (string feature)
SUCCESS_COLUMN = "success"  # our per-episode success flag in the episode metadata
SOURCE_EPISODE_COLUMN = "source_episode_id"  # our episode_id when it differs from episode_index
DEFAULT_CHUNKS_SIZE = 1000  # files per chunk folder (LeRobot's default)
DEFAULT_ROWS_PER_FILE = 50_000  # v3.0: start a new data/video file after this many frames
IMAGE_STATS_FRAMES = 20  # frames per episode and camera sampled for image statistics
QUANTILE_SAMPLE = 100_000  # rows kept (reservoir) per feature for quantile statistics

_V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
_V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
_V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
_V30_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"

_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # HF datasets Image()


# --------------------------------------------------------------------------- video


def available_av1_encoder() -> str | None:
    """Name of an AV1 encoder in PyAV's bundled FFmpeg, or None."""
    import av

    for name in ("libsvtav1", "libaom-av1", "librav1e"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001  (av raises UnknownCodecError/ValueError by version)
            continue
    return None


def _encoder_for(codec: str) -> str:
    if codec == "h264":
        return "h264"  # PyAV maps this to libx264
    if codec == "av1":
        enc = available_av1_encoder()
        if enc is None:
            raise ValueError("codec='av1' but PyAV's FFmpeg has no AV1 encoder (libsvtav1, libaom-av1, librav1e)")
        return enc
    raise ValueError(f"codec must be 'h264' or 'av1', got {codec!r}")


class _VideoWriter:
    """Appends RGB frames to one mp4 at constant fps; frame k has pts k (time k / fps)."""

    def __init__(self, path: Path, fps: float, height: int, width: int, codec: str, crf: int, gop: int):
        import av

        # SVT-AV1 prints a banner per stream to stderr unless told to log errors only.
        os.environ.setdefault("SVT_LOG", "1")
        if height % 2 or width % 2:
            raise SchemaError(f"video {path}: yuv420p needs even image sizes, got {height}x{width}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream(_encoder_for(codec), rate=rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = 1 / rate
        # Short GOPs make seeking to an episode cheap (LeRobot uses g=2 as well).
        opts = {"crf": str(crf), "g": str(gop)}
        if self.stream.codec_context.name == "libsvtav1":
            opts["preset"] = "10"  # a fast SVT-AV1 preset; quality is set by crf
        self.stream.options = opts
        self.frames = 0
        self.size = (height, width)

    def add(self, img: np.ndarray) -> None:
        import av

        if img.shape[:2] != self.size:
            raise SchemaError(f"video {self.path}: frame of size {img.shape[:2]} in a {self.size} video")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:, :, :3]), format="rgb24")
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


class _VideoReader:
    """Decodes the frames of one mp4 at given timestamps (seconds), seeking first."""

    def __init__(self, path: Path, key: str):
        import av

        self.path, self.key = path, key
        try:
            self.container = av.open(str(path))
        except Exception as e:  # noqa: BLE001  (av.error.* differ between versions)
            raise SchemaError(f"cannot open video {path} of feature {key!r}: {e}") from e
        self.stream = self.container.streams.video[0]
        self.fps = float(self.stream.average_rate or self.stream.guessed_rate or 0) or None

    def frames_at(self, times: np.ndarray, fps: float) -> Iterator[np.ndarray]:
        """Yield uint8 HWC frames whose time matches each of `times` (ascending) within 0.4 frame."""
        tol = 0.4 / fps
        tb = self.stream.time_base
        self.container.seek(max(0, int(math.floor((times[0] - tol) / tb))), stream=self.stream, backward=True)
        i = 0
        for frame in self.container.decode(self.stream):
            t = float(frame.pts * tb) if frame.pts is not None else float(frame.time)
            if i < len(times) and t > times[i] + tol:
                raise SchemaError(
                    f"video {self.path} ({self.key!r}) has no frame at {times[i]:.4f} s (next frame at {t:.4f} s)"
                )
            if i < len(times) and abs(t - times[i]) <= tol:
                yield frame.to_ndarray(format="rgb24")
                i += 1
            if i == len(times):
                return
        raise SchemaError(
            f"video {self.path} ({self.key!r}) ends before {times[i]:.4f} s; "
            f"{len(times) - i} of {len(times)} requested frames missing"
        )

    def close(self) -> None:
        self.container.close()


# --------------------------------------------------------------------------- statistics


class _Stats:
    """Running min/max/mean/std/count per feature dimension, plus a reservoir for quantiles."""

    def __init__(self, seed: int = 0):
        self.n = 0
        self.sum = self.sumsq = self.min = self.max = None
        self.sample: np.ndarray | None = None
        self.rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if not len(x):
            return
        if self.sum is None:
            self.sum, self.sumsq = x.sum(0), (x * x).sum(0)
            self.min, self.max = x.min(0), x.max(0)
        else:
            self.sum += x.sum(0)
            self.sumsq += (x * x).sum(0)
            self.min, self.max = np.minimum(self.min, x.min(0)), np.maximum(self.max, x.max(0))
        # Reservoir of at most QUANTILE_SAMPLE rows: exact quantiles on small data, sampled on big.
        self.sample = x if self.sample is None else np.concatenate([self.sample, x])
        if len(self.sample) > QUANTILE_SAMPLE:
            self.sample = self.sample[self.rng.choice(len(self.sample), QUANTILE_SAMPLE, replace=False)]
        self.n += len(x)

    def to_dict(self, quantiles: bool) -> dict:
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sumsq / self.n - mean * mean, 0.0))
        out = {"min": self.min.tolist(), "max": self.max.tolist(), "mean": mean.tolist(), "std": std.tolist(), "count": [self.n]}
        if quantiles:
            for q in (1, 10, 50, 90, 99):
                out[f"q{q:02d}"] = np.quantile(self.sample, q / 100, axis=0).tolist()
        return out


def _image_stats(frames: list[np.ndarray]) -> dict:
    """LeRobot's per-channel image statistics in [0, 1], shaped [3, 1, 1]."""
    x = np.stack(frames).astype(np.float64) / 255.0  # [N, H, W, 3]
    x = x.reshape(-1, x.shape[-1])
    c = lambda v: [[[float(u)]] for u in v]  # noqa: E731
    return {"min": c(x.min(0)), "max": c(x.max(0)), "mean": c(x.mean(0)), "std": c(x.std(0)), "count": [len(frames)]}


def _merge_image_stats(parts: list[dict]) -> dict:
    n = np.array([p["count"][0] for p in parts], dtype=np.float64)
    arr = lambda k: np.array([np.array(p[k]).reshape(-1) for p in parts])  # noqa: E731
    mean = (arr("mean") * n[:, None]).sum(0) / n.sum()
    var = ((arr("std") ** 2 + (arr("mean") - mean) ** 2) * n[:, None]).sum(0) / n.sum()
    c = lambda v: [[[float(u)]] for u in v]  # noqa: E731
    return {"min": c(arr("min").min(0)), "max": c(arr("max").max(0)), "mean": c(mean), "std": c(np.sqrt(var)), "count": [int(n.sum())]}


# --------------------------------------------------------------------------- writer


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
        if self.version not in (V21, V30):
            raise ValueError(f"LeRobotWriteOptions.version must be {V21!r} or {V30!r}, got {self.version!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"LeRobotWriteOptions.fps must be > 0, got {self.fps}")
        if self.codec not in ("h264", "av1"):
            raise ValueError(f"LeRobotWriteOptions.codec must be 'h264' or 'av1', got {self.codec!r}")
        if not 0 <= self.crf <= 63:
            raise ValueError(f"LeRobotWriteOptions.crf must be in 0..63, got {self.crf}")
        if self.gop < 1 or self.chunks_size < 1 or self.rows_per_file < 1:
            raise ValueError("LeRobotWriteOptions.gop, chunks_size and rows_per_file must be >= 1")


def _video_key(view: str) -> str:
    return IMAGE_KEY_PREFIX + view


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
        self.stats = {STATE_KEY: _Stats(), ACTION_KEY: _Stats(), "timestamp": _Stats(), "frame_index": _Stats(),
                      "episode_index": _Stats(), "index": _Stats(), "task_index": _Stats()}
        self.image_stats: dict[str, list[dict]] = {}
        # v3.0 file rotation state
        self.chunk = self.file = 0
        self.file_rows = 0
        self._data_writer: pq.ParquetWriter | None = None
        self._videos: dict[str, _VideoWriter] = {}
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
        ids = pc_unique(t.column(K.EPISODE_ID))
        if len(ids) != 1:
            raise SchemaError(f"{source}: an episode table must hold one {K.EPISODE_ID!r}, got {ids[:5]}")
        kinds = pc_unique(t.column(K.KIND))
        if kinds != [K.KIND_ROBOT]:
            raise SchemaError(f"{source}: field {K.KIND!r} must be {K.KIND_ROBOT!r} for LeRobot, got {kinds}")
        fi = t.column(K.FRAME_INDEX).to_numpy()
        if not np.array_equal(fi, np.arange(len(fi))):
            raise SchemaError(f"{source}: field {K.FRAME_INDEX!r} must be 0..{len(fi) - 1} in order")
        for name, dim in ((K.STATE, self.state_dim), (K.ACTION, self.action_dim)):
            lens = np.unique(t.column(name).combine_chunks().value_lengths().to_numpy())
            if lens.tolist() != [dim]:
                raise SchemaError(f"{source}: field {name!r} has lengths {lens.tolist()}, expected {dim} in every row")
        for row_views in pc_unique_lists(t.column(K.IMAGE_VIEWS)):
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
        tasks = t.column(K.TASK).to_pylist()
        for task in tasks:
            self.tasks.setdefault(task, len(self.tasks))
        task_index = np.array([self.tasks[x] for x in tasks], dtype=np.int64)
        state = np.asarray(t.column(K.STATE).combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float32).reshape(n, -1)
        action = np.asarray(t.column(K.ACTION).combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float32).reshape(n, -1)
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
        # Per-view image bytes -> video frames or PNG struct column.
        per_view = list(zip(*t.column(K.IMAGES).to_pylist()))
        meta: dict = {}
        if self.opt.version == V30 and self.file_rows and self.file_rows + n > self.opt.rows_per_file:
            self._rotate()
        for v, blobs in zip(self.views, per_view):
            key = _video_key(v)
            sample_at = set(np.linspace(0, n - 1, min(n, IMAGE_STATS_FRAMES)).astype(int).tolist())
            sampled = []
            if self.opt.video:
                writer = self._video_writer(key, v, ep)
                start = writer.frames
                for i, data in enumerate(blobs):
                    img = images.decode(data, f"{source} frame {i} view {v!r}")
                    writer.add(img)
                    if i in sample_at:
                        sampled.append(img)
                meta[f"videos/{key}/chunk_index"] = self.chunk if self.opt.version == V30 else ep // self.opt.chunks_size
                meta[f"videos/{key}/file_index"] = self.file if self.opt.version == V30 else ep
                meta[f"videos/{key}/from_timestamp"] = start / self.fps
                meta[f"videos/{key}/to_timestamp"] = (start + n) / self.fps
                if self.opt.version == V21:
                    writer.close()
                    del self._videos[key]
            else:
                for i in sorted(sample_at):
                    sampled.append(images.decode(blobs[i], f"{source} frame {i} view {v!r}"))
                # PNG/JPEG bytes go in as they are; anything else Pillow reads is stored as PNG.
                blobs = [b if images.image_format(b) else images.encode_png(images.decode(b, f"{source} frame {i} view {v!r}"))
                         for i, b in enumerate(blobs)]
                cols[key] = pa.array([{"bytes": b, "path": None} for b in blobs], type=_IMAGE_STRUCT)
            for s in sampled:
                if s.shape[:2] != self.image_hw[v]:
                    raise SchemaError(f"{source}: view {v!r} has size {s.shape[:2]}, expected {self.image_hw[v]}")
            self.image_stats.setdefault(key, []).append(_image_stats(sampled))
        data = pa.table(cols)
        if self.opt.version == V30:
            if self._data_writer is None:
                path = self.tmp / _V30_DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._data_writer = pq.ParquetWriter(str(path), data.schema)
            self._data_writer.write_table(data)
            meta.update({"data/chunk_index": self.chunk, "data/file_index": self.file})
            self.file_rows += n
        else:
            path = self.tmp / _V21_DATA_PATH.format(episode_chunk=ep // self.opt.chunks_size, episode_index=ep)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(data, str(path))
        ep_stats = {STATE_KEY: _Stats(), ACTION_KEY: _Stats()}
        ep_stats[STATE_KEY].add(state)
        ep_stats[ACTION_KEY].add(action)
        for name, x in ((STATE_KEY, state), (ACTION_KEY, action), ("timestamp", cols["timestamp"].to_numpy()),
                        ("frame_index", np.arange(n)), ("episode_index", np.full(n, ep)),
                        ("index", np.arange(index0, index0 + n)), ("task_index", task_index)):
            self.stats[name].add(x)
        success = pc_unique(t.column(K.SUCCESS))
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

    def _video_writer(self, key: str, view: str, ep: int) -> _VideoWriter:
        if key not in self._videos:
            h, w = self.image_hw[view]
            if self.opt.version == V30:
                rel = _V30_VIDEO_PATH.format(video_key=key, chunk_index=self.chunk, file_index=self.file)
            else:
                rel = _V21_VIDEO_PATH.format(episode_chunk=ep // self.opt.chunks_size, video_key=key, episode_index=ep)
            self._videos[key] = _VideoWriter(self.tmp / rel, self.fps, h, w, self.opt.codec, self.opt.crf, self.opt.gop)
        return self._videos[key]

    def _close_files(self) -> None:
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        for w in self._videos.values():
            w.close()
        self._videos = {}

    def _rotate(self) -> None:
        self._close_files()
        self.file += 1
        if self.file >= self.opt.chunks_size:
            self.chunk, self.file = self.chunk + 1, 0
        self.file_rows = 0

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
            f[_video_key(v)] = feat
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
        }
        if self.opt.version == V30:
            info.update({"data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
                         "data_path": _V30_DATA_PATH, "video_path": _V30_VIDEO_PATH if self.opt.video else None})
        else:
            n_chunks = (n_ep - 1) // self.opt.chunks_size + 1
            info.update({"total_chunks": n_chunks, "total_videos": n_ep * len(self.views) if self.opt.video else 0,
                         "data_path": _V21_DATA_PATH, "video_path": _V21_VIDEO_PATH if self.opt.video else None})
        info["features"] = self._features()
        info["syvla"] = {"dataset": self.dataset, **self.extra_info}
        stats = {k: s.to_dict(quantiles=True) for k, s in self.stats.items()}
        for key, parts in self.image_stats.items():
            stats[key] = _merge_image_stats(parts)
        tasks_sorted = sorted(self.tasks.items(), key=lambda kv: kv[1])
        if self.opt.version == V30:
            self._write_v30_meta(meta, tasks_sorted)
        else:
            self._write_v21_meta(meta, tasks_sorted)
        (meta / "stats.json").write_text(json.dumps(stats, indent=2))
        (meta / "info.json").write_text(json.dumps(info, indent=2))
        if self.root.exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.root} appeared while writing; data left in {self.tmp}")
            shutil.rmtree(self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.root)
        return self.root

    def _write_v30_meta(self, meta: Path, tasks_sorted) -> None:
        pq.write_table(pa.table({"task_index": pa.array([i for _, i in tasks_sorted], pa.int64()),
                                 "task": [t for t, _ in tasks_sorted]}), str(meta / "tasks.parquet"))
        rows = []
        for e in self.episodes:
            row = {k: v for k, v in e.items() if not k.startswith("_")}
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
            for feat, st in {**e["_stats"], **e["_image_stats"]}.items():
                for name, val in st.items():
                    row[f"stats/{feat}/{name}"] = np.asarray(val, dtype=np.float64).reshape(-1).tolist()
            rows.append(row)
        path = self.tmp / _V30_EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows)
        if SUCCESS_COLUMN in table.column_names and table.column(SUCCESS_COLUMN).type == pa.null():
            table = table.set_column(table.column_names.index(SUCCESS_COLUMN), SUCCESS_COLUMN,
                                     pa.array([None] * table.num_rows, pa.bool_()))
        pq.write_table(table, str(path))

    def _write_v21_meta(self, meta: Path, tasks_sorted) -> None:
        with open(meta / "tasks.jsonl", "w") as f:
            for task, i in tasks_sorted:
                f.write(json.dumps({"task_index": i, "task": task}) + "\n")
        with open(meta / "episodes.jsonl", "w") as f, open(meta / "episodes_stats.jsonl", "w") as g:
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


def pc_unique(col) -> list:
    return list(dict.fromkeys(col.to_pylist()))


def pc_unique_lists(col) -> list[list]:
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


# --------------------------------------------------------------------------- reader


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: invalid JSON: {e}") from e


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for i, line in enumerate(f):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SchemaError(f"{path} line {i + 1}: invalid JSON: {e}") from e
    return rows


def _flat_names(names) -> list[str] | None:
    """Feature `names` as a flat list: LeRobot writes a list, a nested list, or a dict of lists."""
    if names is None:
        return None
    if isinstance(names, dict):
        out = []
        for v in names.values():
            out.extend(_flat_names(v) or [])
        return out
    if isinstance(names, (list, tuple)):
        out = []
        for v in names:
            out.extend(_flat_names(v) if isinstance(v, (list, tuple, dict)) else [str(v)])
        return out
    return [str(names)]


def _image_layout(feature: dict) -> str:
    """'hwc' or 'chw' for an image/video feature, from its names (preferred) or shape."""
    names = [n.lower() for n in (_flat_names(feature.get("names")) or [])]
    if len(names) == 3 and names[0] in ("channel", "channels", "c", "rgb"):
        return "chw"
    if len(names) == 3 and names[-1] in ("channel", "channels", "c", "rgb"):
        return "hwc"
    shape = feature.get("shape") or []
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        return "chw"
    return "hwc"


def view_name(key: str) -> str:
    """Camera name of an image feature key: 'observation.images.top' -> 'top', 'observation.image' -> 'image'."""
    if key.startswith(IMAGE_KEY_PREFIX):
        return key[len(IMAGE_KEY_PREFIX):]
    if key.startswith("observation."):
        return key[len("observation."):]
    return key


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    """One episode's place in a LeRobot dataset."""

    episode_index: int
    length: int
    tasks: tuple[str, ...]
    data_file: Path
    from_index: int | None  # global frame index range [from, to), when known
    to_index: int | None
    videos: dict  # video_key -> (path, from_timestamp)
    success: bool | None = None
    source_episode_id: int | None = None


class LeRobotReader:
    """Reads a LeRobotDataset folder (v2.0, v2.1 or v3.0) into FRAME_SCHEMA tables, one per episode.

    reader = LeRobotReader("data/metaworld")
    reader.episodes                   # [EpisodeInfo], from metadata only
    reader.read_episode(i)            # pyarrow.Table in FRAME_SCHEMA
    for table in reader: ...          # every episode, streaming
    reader.episode_of_index(k)        # global frame index -> episode index
    """

    def __init__(self, root: str | os.PathLike, name: str | None = None, state_key: str = STATE_KEY,
                 action_key: str = ACTION_KEY):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise SchemaError(f"{self.root} is not a LeRobot dataset: {info_path} is missing")
        self.info_path = info_path
        self.info = _read_json(info_path)
        version = self.info.get("codebase_version")
        if version not in SUPPORTED_VERSIONS:
            raise SchemaError(f"{info_path}: field 'codebase_version' is {version!r}; supported: {list(SUPPORTED_VERSIONS)}")
        self.version = version
        for field in ("fps", "features", "data_path"):
            if field not in self.info:
                raise SchemaError(f"{info_path}: field {field!r} is missing")
        self.fps = float(self.info["fps"])
        self.features: dict = self.info["features"]
        self.name = name or (self.info.get("syvla") or {}).get("dataset") or self.root.name
        self.image_keys = [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]
        self.video_keys = [k for k in self.image_keys if self.features[k]["dtype"] == "video"]
        if self.video_keys and not self.info.get("video_path"):
            raise SchemaError(f"{info_path}: video features {self.video_keys} but field 'video_path' is empty")
        self.views = [view_name(k) for k in self.image_keys]
        self.state_key, self.action_key = state_key, action_key
        if action_key not in self.features:
            raise SchemaError(f"{info_path}: field 'features' has no {action_key!r} feature")
        if state_key and state_key not in self.features:
            raise SchemaError(f"{info_path}: field 'features' has no {state_key!r} feature "
                              f"(pass state_key='' for a dataset without proprioception)")
        self.state_dim = int(np.prod(self.features[state_key]["shape"])) if state_key else 0
        self.action_dim = int(np.prod(self.features[action_key]["shape"]))
        self.tasks = self._load_tasks()
        self.episodes = self._load_episodes()
        self._data_cache: tuple[Path, pa.Table] | None = None
        self._video_cache: dict[str, _VideoReader] = {}

    # -- metadata
    def _load_tasks(self) -> dict[int, str]:
        meta = self.root / "meta"
        if self.version == V30:
            path = meta / "tasks.parquet"
            if not path.is_file():
                raise SchemaError(f"{self.root}: {path} is missing (v3.0 layout)")
            t = pq.read_table(str(path))
            # Written by pandas with the task text as the index: the index comes back as a
            # column named "task" (pandas metadata) or "__index_level_0__".
            text_col = next((c for c in ("task", "__index_level_0__") if c in t.column_names), None)
            if text_col is None or "task_index" not in t.column_names:
                raise SchemaError(f"{path}: needs columns 'task_index' and 'task', got {t.column_names}")
            return dict(zip(t.column("task_index").to_pylist(), t.column(text_col).to_pylist()))
        path = meta / "tasks.jsonl"
        if not path.is_file():
            raise SchemaError(f"{self.root}: {path} is missing ({self.version} layout)")
        out = {}
        for row in _read_jsonl(path):
            if "task_index" not in row or "task" not in row:
                raise SchemaError(f"{path}: each line needs fields 'task_index' and 'task', got {sorted(row)}")
            out[int(row["task_index"])] = row["task"]
        return out

    def _load_episodes(self) -> list[EpisodeInfo]:
        meta = self.root / "meta"
        chunks = int(self.info.get("chunks_size", DEFAULT_CHUNKS_SIZE))
        out = []
        if self.version == V30:
            files = sorted((meta / "episodes").glob("chunk-*/file-*.parquet"))
            if not files:
                raise SchemaError(f"{self.root}: no meta/episodes/chunk-*/file-*.parquet (v3.0 layout)")
            for path in files:
                cols = pq.read_schema(str(path)).names
                keep = [c for c in cols if not c.startswith("stats/")]  # stats are not needed to read frames
                for row in pq.read_table(str(path), columns=keep).to_pylist():
                    out.append(self._episode_v30(row, path))
        else:
            path = meta / "episodes.jsonl"
            if not path.is_file():
                raise SchemaError(f"{self.root}: {path} is missing ({self.version} layout)")
            for row in _read_jsonl(path):
                for field in ("episode_index", "length"):
                    if field not in row:
                        raise SchemaError(f"{path}: field {field!r} missing in {row}")
                ep = int(row["episode_index"])
                data = self.root / self.info["data_path"].format(episode_chunk=ep // chunks, episode_index=ep)
                videos = {k: (self.root / self.info["video_path"].format(episode_chunk=ep // chunks, video_key=k, episode_index=ep), 0.0)
                          for k in self.video_keys}
                out.append(EpisodeInfo(ep, int(row["length"]), tuple(row.get("tasks") or ()), data, None, None, videos,
                                       row.get(SUCCESS_COLUMN), row.get(SOURCE_EPISODE_COLUMN)))
            start = 0
            for i, e in enumerate(out):  # v2.x: episodes are stored in index order, back to back
                out[i] = dataclasses.replace(e, from_index=start, to_index=start + e.length)
                start += e.length
        return out

    def _episode_v30(self, row: dict, path: Path) -> EpisodeInfo:
        for field in ("episode_index", "length", "data/chunk_index", "data/file_index"):
            if row.get(field) is None:
                raise SchemaError(f"{path}: field {field!r} missing for episode {row.get('episode_index')}")
        data = self.root / self.info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        videos = {}
        for k in self.video_keys:
            try:
                ci, fi, ts = row[f"videos/{k}/chunk_index"], row[f"videos/{k}/file_index"], row[f"videos/{k}/from_timestamp"]
            except KeyError as e:
                raise SchemaError(f"{path}: field {e.args[0]!r} missing (video feature {k!r})") from e
            videos[k] = (self.root / self.info["video_path"].format(video_key=k, chunk_index=ci, file_index=fi), float(ts))
        return EpisodeInfo(int(row["episode_index"]), int(row["length"]), tuple(row.get("tasks") or ()), data,
                           row.get("dataset_from_index"), row.get("dataset_to_index"), videos,
                           row.get(SUCCESS_COLUMN), row.get(SOURCE_EPISODE_COLUMN))

    def __len__(self) -> int:
        return len(self.episodes)

    def episode_of_index(self, index: int) -> int:
        """Episode index holding global frame `index`."""
        import bisect

        starts = [e.from_index for e in self.episodes]
        i = bisect.bisect_right(starts, index) - 1
        if i < 0 or index >= self.episodes[i].to_index:
            raise IndexError(f"frame index {index} is outside {self.root} (0..{self.episodes[-1].to_index - 1})")
        return self.episodes[i].episode_index

    # -- frames
    def _data_rows(self, ep: EpisodeInfo) -> pa.Table:
        if not ep.data_file.is_file():
            raise SchemaError(f"{self.root}: data file {ep.data_file} of episode {ep.episode_index} is missing")
        if self._data_cache is None or self._data_cache[0] != ep.data_file:
            self._data_cache = (ep.data_file, pq.read_table(str(ep.data_file)))
        table = self._data_cache[1]
        if "episode_index" not in table.column_names:
            raise SchemaError(f"{ep.data_file}: column 'episode_index' is missing")
        rows = table.filter(pc.equal(table.column("episode_index"), ep.episode_index))
        if rows.num_rows != ep.length:
            raise SchemaError(f"{ep.data_file}: episode {ep.episode_index} has {rows.num_rows} rows, metadata says length {ep.length}")
        if "frame_index" in rows.column_names:
            rows = rows.sort_by("frame_index")
        return rows

    def _vector(self, rows: pa.Table, key: str, dim: int, source: Path) -> list:
        if key not in rows.column_names:
            raise SchemaError(f"{source}: column {key!r} is missing")
        col = rows.column(key).combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
            vals = col.to_pylist()
            bad = next((i for i, v in enumerate(vals) if v is None or len(v) != dim), None)
            if bad is not None:
                got = None if vals[bad] is None else len(vals[bad])
                raise SchemaError(f"{source}: column {key!r} has length {got} at row {bad}, "
                                  f"expected {dim} (features[{key!r}].shape)")
            return vals
        if dim == 1 and (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            return [[v] for v in col.to_pylist()]
        raise SchemaError(f"{source}: column {key!r} has type {col.type}, expected a list of {dim} numbers")

    def _images_from_column(self, rows: pa.Table, key: str, source: Path) -> list[bytes]:
        if key not in rows.column_names:
            raise SchemaError(f"{source}: image column {key!r} is missing")
        col = rows.column(key).combine_chunks()
        out = []
        if pa.types.is_struct(col.type):
            for i, item in enumerate(col.to_pylist()):
                data = (item or {}).get("bytes")
                if data is None and (item or {}).get("path"):
                    p = Path(item["path"])
                    p = p if p.is_absolute() else self.root / p
                    if not p.is_file():
                        raise SchemaError(f"{source}: image file {p} of column {key!r} row {i} is missing")
                    data = p.read_bytes()
                if data is None:
                    raise SchemaError(f"{source}: column {key!r} row {i} holds neither image bytes nor a path")
                out.append(self._as_encoded(data, f"{source} column {key!r} row {i}"))
        elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            out = [self._as_encoded(b, f"{source} column {key!r} row {i}") for i, b in enumerate(col.to_pylist())]
        else:  # raw arrays (nested lists), HWC or CHW per the feature
            layout = _image_layout(self.features[key])
            for i, arr in enumerate(col.to_pylist()):
                img = images.as_uint8(np.asarray(arr), f"{source} column {key!r} row {i}")
                out.append(images.encode_png(images.to_hwc(img, layout, f"{source} column {key!r}")))
        return out

    @staticmethod
    def _as_encoded(data: bytes, source: str) -> bytes:
        if images.image_format(data) is not None:
            return data  # PNG/JPEG pass through: the frame schema stores encoded bytes
        return images.encode_png(images.decode(data, source))

    def _video_frames(self, ep: EpisodeInfo, key: str, timestamps: np.ndarray) -> list[bytes]:
        path, from_ts = ep.videos[key]
        if not path.is_file():
            raise SchemaError(f"{self.root}: video file {path} of feature {key!r} (episode {ep.episode_index}) is missing")
        reader = self._video_cache.get(key)
        if reader is None or reader.path != path:
            if reader is not None:
                reader.close()
            reader = self._video_cache[key] = _VideoReader(path, key)
        fps = float(self.features[key].get("info", {}).get("video.fps") or self.fps)
        return [images.encode_png(f) for f in reader.frames_at(from_ts + timestamps, fps)]

    def read_episode(self, i: int) -> pa.Table:
        """Episode at position `i` of `self.episodes` as a FRAME_SCHEMA table."""
        ep = self.episodes[i]
        rows = self._data_rows(ep)
        src = ep.data_file
        n = rows.num_rows
        if "timestamp" not in rows.column_names:
            raise SchemaError(f"{src}: column 'timestamp' is missing")
        ts = rows.column("timestamp").to_numpy().astype(np.float64)
        per_view = []
        for key in self.image_keys:
            if self.features[key]["dtype"] == "video":
                per_view.append(self._video_frames(ep, key, ts))
            else:
                per_view.append(self._images_from_column(rows, key, src))
        if "task_index" in rows.column_names:
            idx = rows.column("task_index").to_pylist()
            missing = sorted({t for t in idx if t not in self.tasks})
            if missing:
                raise SchemaError(f"{src}: column 'task_index' has {missing} not in the tasks metadata")
            tasks = [self.tasks[t] for t in idx]
        elif ep.tasks:
            tasks = [ep.tasks[0]] * n
        else:
            raise SchemaError(f"{src}: no column 'task_index' and episode {ep.episode_index} lists no tasks")
        state = self._vector(rows, self.state_key, self.state_dim, src) if self.state_key else [[] for _ in range(n)]
        action = self._vector(rows, self.action_key, self.action_dim, src)
        cot = rows.column(COT_KEY).to_pylist() if COT_KEY in rows.column_names else [None] * n
        frame_index = rows.column("frame_index").to_pylist() if "frame_index" in rows.column_names else list(range(n))
        episode_id = ep.source_episode_id if ep.source_episode_id is not None else ep.episode_index
        table = pa.table({
            K.DATASET: [self.name] * n,
            K.EPISODE_ID: [int(episode_id)] * n,
            K.FRAME_INDEX: frame_index,
            K.TIMESTAMP: ts,
            K.TASK: tasks,
            K.COT: pa.array(cot, pa.string()),
            K.IMAGE_VIEWS: [self.views] * n,
            K.IMAGES: [list(x) for x in zip(*per_view)] if per_view else [[] for _ in range(n)],
            K.STATE: pa.array(state, pa.list_(pa.float32())),
            K.ACTION: pa.array(action, pa.list_(pa.float32())),
            K.SUCCESS: pa.array([ep.success] * n, pa.bool_()),
            K.KIND: [K.KIND_ROBOT] * n,
            K.CONVERSATION: pa.array([None] * n, pa.string()),
        })
        return conform(table, source=str(src))

    def __iter__(self) -> Iterator[pa.Table]:
        try:
            for i in range(len(self.episodes)):
                yield self.read_episode(i)
        finally:
            self.close()

    def close(self) -> None:
        for r in self._video_cache.values():
            r.close()
        self._video_cache = {}
        self._data_cache = None


def read_lerobot(root: str | os.PathLike, name: str | None = None, **kwargs) -> Iterator[pa.Table]:
    """Yield one FRAME_SCHEMA table per episode of a LeRobot v2.x / v3.0 dataset."""
    yield from LeRobotReader(root, name=name, **kwargs)


__all__ = ["LeRobotWriteOptions", "LeRobotWriter", "write_lerobot", "LeRobotReader", "read_lerobot", "EpisodeInfo",
           "available_av1_encoder", "split_episodes", "view_name"]
