"""Where things are in a LeRobotDataset folder: the one place that knows v2.x from v3.0.

  v3.0: data/chunk-XXX/file-XXX.parquet (many episodes per file),
        videos/<video_key>/chunk-XXX/file-XXX.mp4 (episodes back to back),
        meta/info.json, meta/tasks.parquet, meta/stats.json,
        meta/episodes/chunk-XXX/file-XXX.parquet (one row per episode: data
        file + row range, per video its file and from/to timestamps, stats).
  v2.1: data/chunk-XXX/episode_XXXXXX.parquet, videos/chunk-XXX/<video_key>/
        episode_XXXXXX.mp4, meta/episodes.jsonl, meta/tasks.jsonl,
        meta/episodes_stats.jsonl (v2.0: the same with a global meta/stats.json only).

A file is named by a :class:`FileLoc` (chunk, file). In v2.x every episode has its
own files, so its location follows from its index (file = episode index); in
v3.0 the location is stored per episode in the episode metadata. Both path
templates are formatted with both sets of names (str.format ignores the unused
ones), so reader and writer never branch on the version to build a path.

Feature keys (``observation.images.<view>``, ``observation.state``, ``action``)
and our extras (per-frame ``cot``; per-episode ``success`` and
``source_episode_id``; info.json["syvla"]) are named here too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from syvla.data.schema import SchemaError

V20, V21, V30 = "v2.0", "v2.1", "v3.0"
SUPPORTED_VERSIONS = (V20, V21, V30)  # v2.0 = v2.1 layout with a global meta/stats.json only
WRITABLE_VERSIONS = (V21, V30)

INFO_FILE = "meta/info.json"
STATS_FILE = "meta/stats.json"  # global statistics (v3.0, v2.0; our v2.1 writer adds it too)
DEFAULT_CHUNKS_SIZE = 1000  # files per chunk folder (LeRobot's default)

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_KEY_PREFIX = "observation.images."
COT_KEY = "cot"  # our per-frame chain-of-thought text (string feature)
SUCCESS_COLUMN = "success"  # our per-episode success flag in the episode metadata
SOURCE_EPISODE_COLUMN = "source_episode_id"  # our episode_id when it differs from episode_index

_V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
_V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
_V21_EPISODES_PATH = "meta/episodes.jsonl"
_V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
_V30_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_V30_EPISODES_GLOB = "meta/episodes/chunk-*/file-*.parquet"


@dataclasses.dataclass(frozen=True)
class FileLoc:
    """A data or video file's place: chunk folder and file number (v2.x: the episode index)."""

    chunk: int
    file: int


@dataclasses.dataclass(frozen=True)
class LeRobotLayout:
    """Paths of one dataset version. Paths are relative to the dataset root."""

    version: str
    data_path: str  # template, from info.json["data_path"]
    video_path: str | None  # template, from info.json["video_path"]; None without video features
    chunks_size: int = DEFAULT_CHUNKS_SIZE

    @classmethod
    def new(cls, version: str, video: bool, chunks_size: int = DEFAULT_CHUNKS_SIZE) -> "LeRobotLayout":
        """LeRobot's own path templates for a dataset about to be written."""
        if version not in WRITABLE_VERSIONS:
            raise ValueError(f"LeRobot version must be one of {WRITABLE_VERSIONS}, got {version!r}")
        data, vid = (_V30_DATA_PATH, _V30_VIDEO_PATH) if version == V30 else (_V21_DATA_PATH, _V21_VIDEO_PATH)
        return cls(version, data, vid if video else None, chunks_size)

    @classmethod
    def from_info(cls, info: dict, info_path: Path) -> "LeRobotLayout":
        """The layout an info.json describes; SchemaError naming the field when it cannot be read."""
        version = info.get("codebase_version")
        if version not in SUPPORTED_VERSIONS:
            raise SchemaError(f"{info_path}: field 'codebase_version' is {version!r}; supported: {list(SUPPORTED_VERSIONS)}")
        if "data_path" not in info:
            raise SchemaError(f"{info_path}: field 'data_path' is missing")
        return cls(version, info["data_path"], info.get("video_path") or None,
                   int(info.get("chunks_size", DEFAULT_CHUNKS_SIZE)))

    # -- what differs between the versions
    @property
    def episodes_share_files(self) -> bool:
        """v3.0: many episodes per data/video file, located by the episode metadata; v2.x: one file each."""
        return self.version == V30

    @property
    def tasks_file(self) -> str:
        return "meta/tasks.parquet" if self.episodes_share_files else "meta/tasks.jsonl"

    @property
    def episodes_stats_file(self) -> str | None:
        """Per-episode statistics in a file of their own (v2.1); v3.0 keeps them in the episode rows."""
        return None if self.episodes_share_files else "meta/episodes_stats.jsonl"

    @property
    def required_episode_fields(self) -> tuple[str, ...]:
        """Fields every episode metadata row needs to locate its frames."""
        base = ("episode_index", "length")
        return base + ("data/chunk_index", "data/file_index") if self.episodes_share_files else base

    def episodes_files(self, root: Path) -> list[Path]:
        """The episode metadata files (.parquet for v3.0, .jsonl for v2.x), in order."""
        if self.episodes_share_files:
            return sorted(root.glob(_V30_EPISODES_GLOB))
        path = root / _V21_EPISODES_PATH
        return [path] if path.is_file() else []

    @property
    def episodes_files_pattern(self) -> str:
        """What `episodes_files` looks for, for messages."""
        return _V30_EPISODES_GLOB if self.episodes_share_files else _V21_EPISODES_PATH

    def episodes_meta_file(self, loc: FileLoc = FileLoc(0, 0)) -> str:
        """Where the episode metadata is written (v3.0: the parquet file at `loc`)."""
        if self.episodes_share_files:
            return _V30_EPISODES_PATH.format(chunk_index=loc.chunk, file_index=loc.file)
        return _V21_EPISODES_PATH

    # -- locations
    def episode_loc(self, episode_index: int) -> FileLoc:
        """v2.x: the files of an episode follow from its index."""
        return FileLoc(episode_index // self.chunks_size, episode_index)

    def data_loc(self, row: dict) -> FileLoc:
        """Data file of an episode metadata row."""
        if self.episodes_share_files:
            return FileLoc(int(row["data/chunk_index"]), int(row["data/file_index"]))
        return self.episode_loc(int(row["episode_index"]))

    def video_loc(self, row: dict, key: str) -> tuple[FileLoc, float, float | None]:
        """(video file, start and end of the episode in it in seconds) of an episode metadata row.

        v3.0 stores both times (end = to_timestamp, exclusive); a v2.x episode has its video to
        itself, from 0 to its end (None: the file's own length). KeyError names the missing field."""
        if self.episodes_share_files:
            return (FileLoc(int(row[f"videos/{key}/chunk_index"]), int(row[f"videos/{key}/file_index"])),
                    float(row[f"videos/{key}/from_timestamp"]), float(row[f"videos/{key}/to_timestamp"]))
        return self.episode_loc(int(row["episode_index"])), 0.0, None

    @property
    def ranges_in_metadata(self) -> bool:
        """v3.0 episode rows hold their global frame range (dataset_from_index/dataset_to_index); v2.x
        rows do not, and the range comes from the data file's `index` column (episode numbers may
        have gaps, so summing lengths would shift every range after one)."""
        return self.episodes_share_files

    def next_loc(self, current: FileLoc | None, episode_index: int, file_rows: int, rows: int,
                 rows_per_file: int) -> FileLoc:
        """Writer: the files the next episode (`rows` frames) goes to, given the current ones and
        the frames already in them. v3.0 starts a new file past `rows_per_file` frames."""
        if not self.episodes_share_files:
            return self.episode_loc(episode_index)
        if current is None:
            return FileLoc(0, 0)
        if file_rows and file_rows + rows > rows_per_file:
            file = current.file + 1
            return FileLoc(current.chunk + 1, 0) if file >= self.chunks_size else FileLoc(current.chunk, file)
        return current

    def data_file(self, loc: FileLoc) -> str:
        return self.data_path.format(chunk_index=loc.chunk, file_index=loc.file,
                                     episode_chunk=loc.chunk, episode_index=loc.file)

    def video_file(self, key: str, loc: FileLoc) -> str:
        if self.video_path is None:
            raise SchemaError(f"video feature {key!r} but the dataset has no video_path")
        return self.video_path.format(video_key=key, chunk_index=loc.chunk, file_index=loc.file,
                                      episode_chunk=loc.chunk, episode_index=loc.file)

    def info_fields(self, episodes: int, views: int) -> dict:
        """The version's own info.json fields (in LeRobot's order), paths last."""
        if self.episodes_share_files:
            fields = {"data_files_size_in_mb": 100, "video_files_size_in_mb": 500}
        else:
            fields = {"total_chunks": (episodes - 1) // self.chunks_size + 1,
                      "total_videos": episodes * views if self.video_path else 0}
        return {**fields, "data_path": self.data_path, "video_path": self.video_path}


# --------------------------------------------------------------------------- feature keys


def video_key(view: str) -> str:
    """Feature key of a camera: 'top' -> 'observation.images.top'."""
    return IMAGE_KEY_PREFIX + view


def view_name(key: str) -> str:
    """Camera name of an image feature key: 'observation.images.top' -> 'top', 'observation.image' -> 'image'."""
    if key.startswith(IMAGE_KEY_PREFIX):
        return key[len(IMAGE_KEY_PREFIX):]
    if key.startswith("observation."):
        return key[len("observation."):]
    return key


def flat_names(names) -> list[str] | None:
    """Feature `names` as a flat list: LeRobot writes a list, a nested list, or a dict of lists."""
    if names is None:
        return None
    if isinstance(names, dict):
        out = []
        for v in names.values():
            out.extend(flat_names(v) or [])
        return out
    if isinstance(names, (list, tuple)):
        out = []
        for v in names:
            out.extend(flat_names(v) if isinstance(v, (list, tuple, dict)) else [str(v)])
        return out
    return [str(names)]


def frame_size(feature: dict) -> tuple[int, int] | None:
    """(height, width) an image/video feature declares by its `shape` (HWC or CHW), or None."""
    shape = feature.get("shape") or []
    if len(shape) != 3:
        return None
    h, w = shape[1:] if image_layout(feature) == "chw" else shape[:2]
    return int(h), int(w)


def image_layout(feature: dict) -> str:
    """'hwc' or 'chw' for an image/video feature, from its names (preferred) or shape."""
    names = [n.lower() for n in (flat_names(feature.get("names")) or [])]
    if len(names) == 3 and names[0] in ("channel", "channels", "c", "rgb"):
        return "chw"
    if len(names) == 3 and names[-1] in ("channel", "channels", "c", "rgb"):
        return "hwc"
    shape = feature.get("shape") or []
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        return "chw"
    return "hwc"
