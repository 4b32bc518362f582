"""One entry point for every dataset format: detect the layout, stream FRAME_SCHEMA tables.

    for table in read_dataset("data/metaworld"):      # one pyarrow.Table per episode (or per batch of VQA rows)
        ...

Formats (../shared/notes/formats.md):
  "lerobot"  a folder with meta/info.json (LeRobotDataset v2.0 / v2.1 / v3.0)
  "rlds"     a TFDS folder with dataset_info.json and *.tfrecord-* files
             (the folder itself or one <version>/ level below it)
  "llava"    a LLaVA-style .json file (list of {"id", "image", "conversations"}),
             or a folder holding exactly one such .json
Every table is conform()'d to FRAME_SCHEMA; bad input raises SchemaError naming
the file and field.

Parallel reading (syvla.data.prepare) splits an input into :class:`ReadUnit`s
(:func:`plan_read_units`), reads each with :func:`iter_unit` and re-cuts the
stream into blocks of whole episodes with :func:`episode_blocks`; all three are
plain functions, testable without Ray.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from syvla import constants as K
from syvla.data.columns import episode_bounds
from syvla.data.schema import SchemaError, conform

FORMATS = ("lerobot", "rlds", "llava")


def _rlds_dir(path: Path) -> Path | None:
    """The TFDS version folder under `path` (itself or one level down), or None."""
    from syvla.data.rlds import find_tfds_dir

    return find_tfds_dir(path)


def _llava_json(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".json":
        return path
    if path.is_dir():
        candidates = [p for p in sorted(path.glob("*.json")) if p.name not in ("dataset_info.json", "features.json")]
        if len(candidates) == 1:
            return candidates[0]
    return None


def detect_format(path: str | os.PathLike) -> str:
    """'lerobot', 'rlds' or 'llava' for a dataset path; SchemaError naming the path otherwise."""
    p = Path(path)
    if not p.exists():
        raise SchemaError(f"dataset path {p} does not exist")
    if p.is_dir() and (p / "meta" / "info.json").is_file():
        return "lerobot"
    if p.is_dir() and _rlds_dir(p) is not None:
        return "rlds"
    js = _llava_json(p)
    if js is not None:
        try:
            with open(js) as f:
                head = f.read(1 << 16).lstrip()
        except UnicodeDecodeError as e:
            raise SchemaError(f"{js}: not a UTF-8 JSON file: {e}") from e
        if head.startswith("["):
            return "llava"
        raise SchemaError(f"{js}: a LLaVA JSON file must hold a list of samples")
    if p.is_dir() and (p / "meta").is_dir():
        raise SchemaError(f"{p} looks like a LeRobot dataset but {p / 'meta' / 'info.json'} is missing")
    raise SchemaError(
        f"{p}: unrecognized dataset layout; expected meta/info.json (LeRobot), dataset_info.json + "
        f"*.tfrecord-* files (RLDS/TFDS), or a LLaVA .json file"
    )


def read_dataset(path: str | os.PathLike, name: str | None = None, format: str | None = None,
                 **kwargs) -> Iterator[pa.Table]:
    """Stream a dataset as FRAME_SCHEMA tables (one per episode; LLaVA: batches of rows).

    name: dataset (= embodiment) name for the `dataset` column; default from the
    dataset's own metadata or its folder name. format: skip detection.
    kwargs go to the format's reader (e.g. image_folder= for LLaVA, fps= for RLDS).
    """
    p = Path(path)
    fmt = format or detect_format(p)
    if fmt == "lerobot":
        from syvla.data.lerobot import read_lerobot

        tables = read_lerobot(p, name=name, **kwargs)
    elif fmt == "rlds":
        from syvla.data.rlds import read_rlds

        tables = read_rlds(p, name=name, **kwargs)
    elif fmt == "llava":
        from syvla.data.llava import read_llava

        js = _llava_json(p)
        if js is None:
            raise SchemaError(f"{p}: no single LLaVA .json file found")
        tables = read_llava(js, name=name, **kwargs)
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    for table in tables:
        yield conform(table, source=str(p))


def list_episodes(path: str | os.PathLike, format: str | None = None) -> list[dict]:
    """Cheap per-episode listing from metadata: [{"episode_id", "length", "tasks"}].

    LeRobot reads meta/ (v2.x: and each data file's footer, for the global index range); RLDS parses each record's step count without
    decoding images; LLaVA lists one "episode" per sample.
    """
    p = Path(path)
    fmt = format or detect_format(p)
    if fmt == "lerobot":
        from syvla.data.lerobot import LeRobotReader

        r = LeRobotReader(p)
        ranges = r.index_ranges()
        return [{"episode_id": e.source_episode_id if e.source_episode_id is not None else e.episode_index,
                 "episode_index": e.episode_index, "length": e.length, "tasks": list(e.tasks),
                 "from_index": lo, "to_index": hi} for e, (lo, hi) in zip(r.episodes, ranges)]
    if fmt == "rlds":
        from syvla.data.rlds import list_rlds_episodes

        return list_rlds_episodes(p)
    if fmt == "llava":
        js = _llava_json(p)
        with open(js) as f:
            samples = json.load(f)
        return [{"episode_id": i, "length": 1, "tasks": [], "id": s.get("id")} for i, s in enumerate(samples)]
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


# ---- read units: an input split into tasks of whole episodes ----------------------------
@dataclasses.dataclass(frozen=True)
class ReadUnit:
    """One read task's share of an input: LeRobot episode positions, or (episodes=None) the whole
    ``read_dataset`` stream of a format whose reader has no per-episode access."""

    path: str
    name: str | None
    episodes: tuple[int, ...] | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ReadUnit":
        u = json.loads(text)
        return cls(u["path"], u["name"], tuple(u["episodes"]) if u["episodes"] is not None else None)


def plan_read_units(path: str, name: str | None, block_frames: int) -> list[ReadUnit]:
    """Split an input into read units of about `block_frames` frames of whole episodes.

    LeRobot datasets split by episode (each task opens its own reader: video decoding runs in
    parallel); RLDS and LLaVA inputs are read by one task."""
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


@dataclasses.dataclass(frozen=True)
class UnreadableEpisode:
    """An episode a read unit skipped: its frames could not be read (the error names file, episode, camera)."""

    dataset: str
    episode_id: int
    length: int  # frames its metadata declares
    error: str


def iter_unit(unit: ReadUnit, unreadable: list[UnreadableEpisode] | None = None) -> Iterator[pa.Table]:
    """FRAME_SCHEMA tables of one read unit, one or more whole episodes each.

    A LeRobot episode that cannot be read (syvla.data.lerobot.EpisodeError) raises, or, given an
    `unreadable` list, is appended to it and skipped: preparing a dataset drops such an episode
    with its error (syvla.data.cleaning) instead of giving up on the rest."""
    if unit.episodes is None:
        yield from read_dataset(unit.path, name=unit.name)
        return
    from syvla.data.lerobot import EpisodeError, LeRobotReader

    reader = LeRobotReader(unit.path, name=unit.name)
    try:
        for i in unit.episodes:
            try:
                table = reader.read_episode(i)
            except EpisodeError as e:
                if unreadable is None:
                    raise
                ep = reader.episodes[i]
                episode_id = ep.source_episode_id if ep.source_episode_id is not None else ep.episode_index
                unreadable.append(UnreadableEpisode(reader.name, int(episode_id), ep.length, str(e)))
                continue
            yield table
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


def declared_metadata(path: str | os.PathLike) -> dict:
    """What a dataset's own metadata declares about its embodiment: {"fps", "state_names",
    "action_names"}, each None when the format does not declare it (only LeRobot's info.json does)."""
    if detect_format(path) != "lerobot":
        return {"fps": None, "state_names": None, "action_names": None}
    from syvla.data.lerobot import LeRobotReader
    from syvla.data.lerobot.layout import flat_names

    r = LeRobotReader(path)
    state = flat_names(r.features[r.state_key].get("names")) if r.state_key else None
    return {"fps": r.fps, "state_names": state, "action_names": flat_names(r.features[r.action_key].get("names"))}


__all__ = ["FORMATS", "detect_format", "read_dataset", "list_episodes", "ReadUnit", "plan_read_units", "iter_unit",
           "UnreadableEpisode",
           "episode_blocks", "declared_metadata"]
