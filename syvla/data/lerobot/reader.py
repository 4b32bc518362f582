"""A LeRobotDataset folder (v2.0, v2.1 or v3.0) -> FRAME_SCHEMA tables, one per episode.

Metadata is read once (info.json, tasks, episode rows) into :class:`EpisodeInfo`
records that hold each episode's files; where the files are comes from
:class:`~syvla.data.lerobot.layout.LeRobotLayout`, so this module never branches
on the version to find a file. Frames are then read per episode: its rows of
the data file, its frames of each camera's video (seek to the episode's
from_timestamp plus the frame's timestamp), images stored in the parquet.

Nothing wrong with an episode passes silently: a file that does not open or
decode, frames whose size or number disagrees with info.json and the episode
length, or a v3.0 video span (from_timestamp, to_timestamp) that cannot hold the
episode raise :class:`EpisodeError` naming the file, the episode and the camera.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from syvla import constants as K
from syvla.data import images
from syvla.data.lerobot.layout import (ACTION_KEY, COT_KEY, INFO_FILE, SOURCE_EPISODE_COLUMN, STATE_KEY,
                                       SUCCESS_COLUMN, LeRobotLayout, frame_size, image_layout, view_name)
from syvla.data.lerobot.video import VideoError, VideoReader
from syvla.data.schema import SchemaError, conform


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


def _read_rows(path: Path) -> list[dict]:
    """Metadata rows of a .jsonl or .parquet file (parquet: without the per-episode `stats/` columns,
    which reading frames does not need)."""
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    keep = [c for c in pq.read_schema(str(path)).names if not c.startswith("stats/")]
    return pq.read_table(str(path), columns=keep).to_pylist()


def _read_tasks(path: Path) -> dict[int, str]:
    """{task_index: task text} from tasks.jsonl or tasks.parquet."""
    if path.suffix == ".jsonl":
        out = {}
        for row in _read_jsonl(path):
            if "task_index" not in row or "task" not in row:
                raise SchemaError(f"{path}: each line needs fields 'task_index' and 'task', got {sorted(row)}")
            out[int(row["task_index"])] = row["task"]
        return out
    t = pq.read_table(str(path))
    # Written by pandas with the task text as the index: the index comes back as a
    # column named "task" (pandas metadata) or "__index_level_0__".
    text_col = next((c for c in ("task", "__index_level_0__") if c in t.column_names), None)
    if text_col is None or "task_index" not in t.column_names:
        raise SchemaError(f"{path}: needs columns 'task_index' and 'task', got {t.column_names}")
    return dict(zip(t.column("task_index").to_pylist(), t.column(text_col).to_pylist()))


class EpisodeError(SchemaError):
    """One episode cannot be read: its files fail to open or decode, or its frames disagree with the
    metadata (size, count, timestamps). The message names the file, the episode and, for a camera,
    its feature key. The rest of the dataset may be fine: prepare drops the episode with this message
    (syvla.data.readers.iter_unit) instead of giving up on the dataset."""

    def __init__(self, path: Path | str, episode: int, camera: str | None, problem: str):
        self.path, self.episode, self.camera, self.problem = str(path), int(episode), camera, problem
        where = f"episode {episode}" + (f" camera {camera!r}" if camera else "")
        super().__init__(f"{path}: {where}: {problem}")

    def __reduce__(self):  # Ray pickles exceptions; the default would call __init__ with the message only
        return type(self), (self.path, self.episode, self.camera, self.problem)


@dataclasses.dataclass(frozen=True)
class VideoSpan:
    """Where one camera's frames of an episode are: a file and a time range in it (seconds)."""

    path: Path
    from_timestamp: float
    to_timestamp: float | None  # exclusive; None (v2.x): the end of the file, which the episode has to itself


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    """One episode's place in a LeRobot dataset."""

    episode_index: int
    length: int
    tasks: tuple[str, ...]
    data_file: Path
    from_index: int | None  # global frame index range [from, to): v3.0 from its metadata, v2.x from
    to_index: int | None    # LeRobotReader.index_ranges() (None until that is called)
    videos: dict[str, VideoSpan]  # video feature key -> its span
    success: bool | None = None
    source_episode_id: int | None = None


class LeRobotReader:
    """Reads a LeRobotDataset folder (v2.0, v2.1 or v3.0) into FRAME_SCHEMA tables, one per episode.

    reader = LeRobotReader("data/metaworld")
    reader.episodes                   # [EpisodeInfo], from metadata only
    reader.read_episode(i)            # pyarrow.Table in FRAME_SCHEMA; EpisodeError if it cannot be read
    for table in reader: ...          # every episode, streaming
    reader.episode_of_index(k)        # global frame index -> episode index

    Every episode is checked as it is read: its data rows and each camera's frames must number
    `length`, frames must have the size info.json declares (features[key].shape and
    info.video.height/width), and a v3.0 video span (from_timestamp, to_timestamp) must hold
    `length` frames and not overlap another episode's span in the same file.
    """

    def __init__(self, root: str | os.PathLike, name: str | None = None, state_key: str = STATE_KEY,
                 action_key: str = ACTION_KEY):
        self.root = Path(root)
        info_path = self.root / INFO_FILE
        if not info_path.is_file():
            raise SchemaError(f"{self.root} is not a LeRobot dataset: {info_path} is missing")
        self.info_path = info_path
        self.info = _read_json(info_path)
        self.layout = LeRobotLayout.from_info(self.info, info_path)
        self.version = self.layout.version
        for field in ("fps", "features"):
            if field not in self.info:
                raise SchemaError(f"{info_path}: field {field!r} is missing")
        self.fps = float(self.info["fps"])
        self.features: dict = self.info["features"]
        self.name = name or (self.info.get("syvla") or {}).get("dataset") or self.root.name
        self.image_keys = [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]
        self.video_keys = [k for k in self.image_keys if self.features[k]["dtype"] == "video"]
        if self.video_keys and not self.layout.video_path:
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
        self.frame_sizes = {k: self._declared_sizes(k) for k in self.image_keys}
        self.tasks = self._load_tasks()
        self.episodes = self._load_episodes()
        self._span_problems = self._check_spans()
        self._ranges_known = self.layout.ranges_in_metadata
        self._data_cache: tuple[Path, pa.Table] | None = None
        self._video_cache: dict[str, VideoReader] = {}

    # -- metadata
    def _load_tasks(self) -> dict[int, str]:
        path = self.root / self.layout.tasks_file
        if not path.is_file():
            raise SchemaError(f"{self.root}: {path} is missing ({self.version} layout)")
        return _read_tasks(path)

    def _load_episodes(self) -> list[EpisodeInfo]:
        files = self.layout.episodes_files(self.root)
        if not files:
            raise SchemaError(f"{self.root}: {self.root / self.layout.episodes_files_pattern} is missing "
                              f"({self.version} layout)")
        return [self._episode(row, path) for path in files for row in _read_rows(path)]

    def _episode(self, row: dict, path: Path) -> EpisodeInfo:
        """An episode metadata row (from `path`) -> its EpisodeInfo with absolute file paths."""
        for field in self.layout.required_episode_fields:
            if row.get(field) is None:
                raise SchemaError(f"{path}: field {field!r} missing for episode {row.get('episode_index')}")
        data = self.root / self.layout.data_file(self.layout.data_loc(row))
        videos = {}
        for k in self.video_keys:
            try:
                loc, from_ts, to_ts = self.layout.video_loc(row, k)
            except KeyError as e:
                raise SchemaError(f"{path}: field {e.args[0]!r} missing (video feature {k!r})") from e
            videos[k] = VideoSpan(self.root / self.layout.video_file(k, loc), from_ts, to_ts)
        return EpisodeInfo(int(row["episode_index"]), int(row["length"]), tuple(row.get("tasks") or ()), data,
                           row.get("dataset_from_index"), row.get("dataset_to_index"), videos,
                           row.get(SUCCESS_COLUMN), row.get(SOURCE_EPISODE_COLUMN))

    def _declared_sizes(self, key: str) -> list[tuple[tuple[int, int], str]]:
        """The (height, width) info.json declares for an image/video feature, each with where it says so."""
        feature = self.features[key]
        out = []
        hw = frame_size(feature)
        if hw is not None:
            out.append((hw, f"features[{key!r}].shape {list(feature['shape'])}"))
        info = feature.get("info") or {}
        if info.get("video.height") and info.get("video.width"):
            out.append(((int(info["video.height"]), int(info["video.width"])),
                        f"features[{key!r}].info video.height/width"))
        return out

    def _video_fps(self, key: str) -> float:
        return float((self.features[key].get("info") or {}).get("video.fps") or self.fps)

    def _check_spans(self) -> dict[int, tuple[str, str]]:
        """{position in self.episodes: (video key, problem)} for v3.0 spans that cannot hold the episode.

        A span must last `length` frames (within half a frame): a from_timestamp or to_timestamp off
        by a frame would otherwise read a neighbour's frame silently. Spans that each look right but
        overlap in one file mark both episodes: which one is wrong cannot be told."""
        problems: dict[int, tuple[str, str]] = {}
        for key in self.video_keys:
            fps = self._video_fps(key)
            half = 0.5 / fps
            by_file: dict[Path, list[int]] = {}
            for i, ep in enumerate(self.episodes):
                span = ep.videos[key]
                if span.to_timestamp is None:
                    continue
                length_s = span.to_timestamp - span.from_timestamp
                if abs(length_s - ep.length / fps) > half or span.from_timestamp < -half:
                    problems.setdefault(i, (key, (
                        f"from_timestamp {span.from_timestamp:.4f} s to to_timestamp {span.to_timestamp:.4f} s "
                        f"spans {length_s * fps:.2f} frames at {fps:g} fps, the episode has length {ep.length}")))
                else:
                    by_file.setdefault(span.path, []).append(i)
            for idx in by_file.values():
                idx.sort(key=lambda i: self.episodes[i].videos[key].from_timestamp)
                for a, b in zip(idx, idx[1:]):
                    sa, sb = self.episodes[a].videos[key], self.episodes[b].videos[key]
                    if sb.from_timestamp < sa.to_timestamp - half:
                        for i, j in ((a, b), (b, a)):
                            other, si, sj = self.episodes[j], self.episodes[i].videos[key], self.episodes[j].videos[key]
                            problems.setdefault(i, (key, (
                                f"span {si.from_timestamp:.4f}..{si.to_timestamp:.4f} s overlaps episode "
                                f"{other.episode_index}'s {sj.from_timestamp:.4f}..{sj.to_timestamp:.4f} s")))
        return problems

    def index_ranges(self) -> list[tuple[int, int]]:
        """Global frame index range [from, to) of every episode (also filled into self.episodes).

        v3.0: from the episode metadata. v2.x: from each data file's `index` column (its parquet
        statistics when written, else the column), checked against the episode's length; a dataset
        without an `index` column numbers its frames back to back in episode order."""
        if not self._ranges_known:
            start = 0
            for i, ep in enumerate(self.episodes):
                lo, hi = self._index_range_of_file(ep)
                if lo is None:
                    lo, hi = start, start + ep.length
                elif hi - lo != ep.length:
                    raise EpisodeError(ep.data_file, ep.episode_index, None,
                                       f"column 'index' spans {lo}..{hi - 1} ({hi - lo} frames), "
                                       f"metadata says length {ep.length}")
                self.episodes[i] = dataclasses.replace(ep, from_index=lo, to_index=hi)
                start = hi
            self._ranges_known = True
        return [(e.from_index, e.to_index) for e in self.episodes]

    def _index_range_of_file(self, ep: EpisodeInfo) -> tuple[int | None, int | None]:
        if not ep.data_file.is_file():
            raise EpisodeError(ep.data_file, ep.episode_index, None, "the data file is missing")
        try:
            f = pq.ParquetFile(str(ep.data_file))
            if "index" not in f.schema_arrow.names:
                return None, None
            col = f.schema_arrow.names.index("index")
            stats = [f.metadata.row_group(g).column(col).statistics for g in range(f.metadata.num_row_groups)]
            if stats and all(s is not None and s.has_min_max for s in stats):
                return min(s.min for s in stats), max(s.max for s in stats) + 1
            index = f.read(columns=["index"]).column("index").to_numpy()
        except (pa.ArrowException, OSError) as e:
            raise EpisodeError(ep.data_file, ep.episode_index, None, f"cannot read the data file: {e}") from e
        return (int(index.min()), int(index.max()) + 1) if len(index) else (None, None)

    def __len__(self) -> int:
        return len(self.episodes)

    def episode_of_index(self, index: int) -> int:
        """Episode index holding global frame `index`."""
        ranges = self.index_ranges()
        order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
        starts = [ranges[i][0] for i in order]
        k = bisect.bisect_right(starts, index) - 1
        if k < 0 or index >= ranges[order[k]][1]:
            raise IndexError(f"frame index {index} is in no episode of {self.root} "
                             f"(episodes cover {min(starts)}..{max(r[1] for r in ranges) - 1})")
        return self.episodes[order[k]].episode_index

    # -- frames
    def _data_rows(self, ep: EpisodeInfo) -> pa.Table:
        def fail(problem: str):
            return EpisodeError(ep.data_file, ep.episode_index, None, problem)

        if not ep.data_file.is_file():
            raise fail("the data file is missing")
        if self._data_cache is None or self._data_cache[0] != ep.data_file:
            try:
                self._data_cache = (ep.data_file, pq.read_table(str(ep.data_file)))
            except (pa.ArrowException, OSError) as e:
                raise fail(f"cannot read the data file: {e}") from e
        table = self._data_cache[1]
        if "episode_index" not in table.column_names:
            raise fail("column 'episode_index' is missing")
        rows = table.filter(pc.equal(table.column("episode_index"), ep.episode_index))
        if rows.num_rows != ep.length:
            raise fail(f"{rows.num_rows} rows, metadata says length {ep.length}")
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
            layout = image_layout(self.features[key])
            for i, arr in enumerate(col.to_pylist()):
                img = images.as_uint8(np.asarray(arr), f"{source} column {key!r} row {i}")
                out.append(images.encode_png(images.to_hwc(img, layout, f"{source} column {key!r}")))
        return out

    @staticmethod
    def _as_encoded(data: bytes, source: str) -> bytes:
        if images.image_format(data) is not None:
            return data  # PNG/JPEG pass through: the frame schema stores encoded bytes
        return images.encode_png(images.decode(data, source))

    def _check_size(self, ep: EpisodeInfo, key: str, path: Path, sizes: list[tuple[int, int] | None]) -> None:
        """Frame sizes (None: unknown, e.g. an image whose header does not read, which cleaning
        reports) against what info.json declares for the feature."""
        for hw, where in self.frame_sizes[key]:
            bad = next((t for t, s in enumerate(sizes) if s is not None and s != hw), None)
            if bad is not None:
                found = sizes[bad]
                raise EpisodeError(path, ep.episode_index, key,
                                   f"frame {bad} is {found[0]}x{found[1]} (height x width), info.json "
                                   f"declares {hw[0]}x{hw[1]} ({where})")

    def _video_frames(self, ep: EpisodeInfo, key: str, timestamps: np.ndarray) -> list[bytes]:
        span = ep.videos[key]

        def fail(problem: str) -> EpisodeError:
            return EpisodeError(span.path, ep.episode_index, key, problem)

        if not span.path.is_file():
            raise fail("the video file is missing")
        fps = self._video_fps(key)
        try:
            reader = self._video_cache.get(key)
            if reader is None or reader.path != span.path:
                if reader is not None:
                    reader.close()
                    del self._video_cache[key]
                reader = self._video_cache[key] = VideoReader(span.path)
            if span.to_timestamp is None and reader.frame_count and reader.frame_count != ep.length:
                raise fail(f"the video has {reader.frame_count} frames, the episode has length {ep.length}")
            frames = reader.frames_at(span.from_timestamp + timestamps, fps)
        except VideoError as e:
            raise fail(str(e)) from e
        self._check_size(ep, key, span.path, [f.shape[:2] for f in frames])
        return [images.encode_png(f) for f in frames]

    def _image_sizes(self, blobs: list[bytes]) -> list[tuple[int, int] | None]:
        out = []
        for b in blobs:
            try:
                out.append(images.image_size(b))
            except images.ImageError:
                out.append(None)  # undecodable: the cleaning step's image check counts it
        return out

    def _camera_frames(self, ep: EpisodeInfo, rows: pa.Table, timestamps: np.ndarray) -> list[list[bytes]]:
        """Encoded images per camera (self.image_keys order), each a list over the episode's frames."""
        out = []
        for key in self.image_keys:
            if self.features[key]["dtype"] == "video":
                out.append(self._video_frames(ep, key, timestamps))
            else:
                blobs = self._images_from_column(rows, key, ep.data_file)
                self._check_size(ep, key, ep.data_file, self._image_sizes(blobs))
                out.append(blobs)
        return out

    def _task_texts(self, ep: EpisodeInfo, rows: pa.Table) -> list[str]:
        """Task text per frame: from its task_index, else the episode's first listed task."""
        src = ep.data_file
        if "task_index" in rows.column_names:
            idx = rows.column("task_index").to_pylist()
            missing = sorted({t for t in idx if t not in self.tasks})
            if missing:
                raise SchemaError(f"{src}: column 'task_index' has {missing} not in the tasks metadata")
            return [self.tasks[t] for t in idx]
        if ep.tasks:
            return [ep.tasks[0]] * rows.num_rows
        raise SchemaError(f"{src}: no column 'task_index' and episode {ep.episode_index} lists no tasks")

    def read_episode(self, i: int) -> pa.Table:
        """Episode at position `i` of `self.episodes` as a FRAME_SCHEMA table.

        EpisodeError (naming file, episode and camera) for anything wrong with this episode's data:
        a file that does not open or decode, frames of the wrong size or number, a bad span, a bad
        column."""
        ep = self.episodes[i]
        if i in self._span_problems:
            key, problem = self._span_problems[i]
            raise EpisodeError(ep.videos[key].path, ep.episode_index, key, problem)
        try:
            return self._read_episode(ep)
        except EpisodeError:
            raise
        except SchemaError as e:
            # Column and image errors name the data file already; keep that as the error's path.
            problem = str(e).removeprefix(f"{ep.data_file}: ").removeprefix(f"{ep.data_file} ")
            raise EpisodeError(ep.data_file, ep.episode_index, None, problem) from e

    def _read_episode(self, ep: EpisodeInfo) -> pa.Table:
        rows = self._data_rows(ep)
        src = ep.data_file
        n = rows.num_rows
        if "timestamp" not in rows.column_names:
            raise SchemaError(f"{src}: column 'timestamp' is missing")
        ts = rows.column("timestamp").to_numpy().astype(np.float64)
        per_view = self._camera_frames(ep, rows, ts)
        tasks = self._task_texts(ep, rows)
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
