"""A LeRobotDataset folder (v2.0, v2.1 or v3.0) -> FRAME_SCHEMA tables, one per episode.

Metadata is read once (info.json, tasks, episode rows) into :class:`EpisodeInfo`
records that hold each episode's files; where the files are comes from
:class:`~syvla.data.lerobot.layout.LeRobotLayout`, so this module never branches
on the version to find a file. Frames are then read per episode: its rows of
the data file, its frames of each camera's video (seek to the episode's
from_timestamp plus the frame's timestamp), images stored in the parquet.
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
                                       SUCCESS_COLUMN, LeRobotLayout, image_layout, view_name)
from syvla.data.lerobot.video import VideoReader
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
        self.tasks = self._load_tasks()
        self.episodes = self._load_episodes()
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
        out = [self._episode(row, path) for path in files for row in _read_rows(path)]
        if self.layout.ranges_from_lengths:
            start = 0
            for i, e in enumerate(out):  # episodes are stored in index order, back to back
                out[i] = dataclasses.replace(e, from_index=start, to_index=start + e.length)
                start += e.length
        return out

    def _episode(self, row: dict, path: Path) -> EpisodeInfo:
        """An episode metadata row (from `path`) -> its EpisodeInfo with absolute file paths."""
        for field in self.layout.required_episode_fields:
            if row.get(field) is None:
                raise SchemaError(f"{path}: field {field!r} missing for episode {row.get('episode_index')}")
        data = self.root / self.layout.data_file(self.layout.data_loc(row))
        videos = {}
        for k in self.video_keys:
            try:
                loc, from_ts = self.layout.video_loc(row, k)
            except KeyError as e:
                raise SchemaError(f"{path}: field {e.args[0]!r} missing (video feature {k!r})") from e
            videos[k] = (self.root / self.layout.video_file(k, loc), from_ts)
        return EpisodeInfo(int(row["episode_index"]), int(row["length"]), tuple(row.get("tasks") or ()), data,
                           row.get("dataset_from_index"), row.get("dataset_to_index"), videos,
                           row.get(SUCCESS_COLUMN), row.get(SOURCE_EPISODE_COLUMN))

    def __len__(self) -> int:
        return len(self.episodes)

    def episode_of_index(self, index: int) -> int:
        """Episode index holding global frame `index`."""
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

    def _video_frames(self, ep: EpisodeInfo, key: str, timestamps: np.ndarray) -> list[bytes]:
        path, from_ts = ep.videos[key]
        if not path.is_file():
            raise SchemaError(f"{self.root}: video file {path} of feature {key!r} (episode {ep.episode_index}) is missing")
        reader = self._video_cache.get(key)
        if reader is None or reader.path != path:
            if reader is not None:
                reader.close()
            reader = self._video_cache[key] = VideoReader(path, key)
        fps = float(self.features[key].get("info", {}).get("video.fps") or self.fps)
        return [images.encode_png(f) for f in reader.frames_at(from_ts + timestamps, fps)]

    def _camera_frames(self, ep: EpisodeInfo, rows: pa.Table, timestamps: np.ndarray) -> list[list[bytes]]:
        """Encoded images per camera (self.image_keys order), each a list over the episode's frames."""
        return [self._video_frames(ep, key, timestamps) if self.features[key]["dtype"] == "video"
                else self._images_from_column(rows, key, ep.data_file) for key in self.image_keys]

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
        """Episode at position `i` of `self.episodes` as a FRAME_SCHEMA table."""
        ep = self.episodes[i]
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
