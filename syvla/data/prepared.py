"""The prepared-data format: what syvla.data.prepare writes and training reads. The one owner of its names.

    <root>/
      manifest.json              Manifest: chunk length, action representation, one DatasetEntry per dataset
      norm_stats.json            syvla.normalize.NormStats of the robot datasets (the same file a checkpoint carries)
      cleaning_report.json       syvla.data.cleaning.CleaningReport: counts dropped per reason
      <dataset>/part-NNNNN.parquet   shards of PREPARED_SCHEMA rows (syvla.data.chunking), one chunked sample per row
      .cache/                    prepare's pass-1 copies of the raw episodes; removed when it is done

Plain files and pyarrow; no Ray (the Ray Dataset over the shards is syvla.data.stream.read_prepared).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from syvla import constants as K
from syvla.data.cleaning import CleaningReport
from syvla.normalize import NORM_STATS_FILE, NormStats

DEMO_ORIGIN = "demos"  # Manifest.origin of data the training pipelines' demo step prepared (it may re-prepare it)
FORMAT_VERSION = 1  # manifest.json "format_version"; a manifest without one was written before it was recorded
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "cleaning_report.json"
CACHE_DIR = ".cache"
SHARD_GLOB = "part-*.parquet"
CACHE_GLOB = "unit-*.parquet"


def shard_name(index: int) -> str:
    """File name of shard `index` in a dataset's folder (one per cached input file: a retried task rewrites it)."""
    return f"part-{index:05d}.parquet"


def cache_name(unit: int, block: int) -> str:
    """File name of block `block` of read unit `unit` in the pass-1 cache."""
    return f"unit-{unit:05d}-{block:05d}.parquet"


def manifest_path(root: str | Path) -> Path:
    return Path(root) / MANIFEST_FILE


def report_path(root: str | Path) -> Path:
    return Path(root) / REPORT_FILE


def norm_stats_path(root: str | Path) -> Path:
    return Path(root) / NORM_STATS_FILE


def cache_dir(root: str | Path) -> Path:
    return Path(root) / CACHE_DIR


def load_norm_stats(root: str | Path) -> NormStats:
    """The normalization statistics of a prepared root (robot datasets only: VQA data has none)."""
    return NormStats.load(norm_stats_path(root))


# ---- the manifest ------------------------------------------------------------------------
def _required(d: Mapping, key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"{where}: field {key!r} is missing")
    return d[key]


def _opt_tuple(x) -> tuple | None:
    return None if x is None else tuple(x)


@dataclasses.dataclass(frozen=True)
class EmbodimentRecord:
    """A robot dataset's embodiment as prepared (name = dataset name): what a model needs to add it."""

    name: str
    state_dim: int  # length of the `state` vector
    action_dim: int  # length of the `action` vector in `action_representation` (eef_relative: 7 or 10)
    cameras: tuple[str, ...]  # image views, in `image_views` order
    action_representation: str = "native"
    fps: float | None = None  # control rate the source declares (LeRobot info.json), None when it declares none
    state_names: tuple[str, ...] | None = None  # per state dimension, when the source names them
    action_names: tuple[str, ...] | None = None  # per action dimension (native actions only)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "embodiment") -> "EmbodimentRecord":
        return cls(name=_required(d, "name", where), state_dim=int(_required(d, "state_dim", where)),
                   action_dim=int(_required(d, "action_dim", where)), cameras=tuple(_required(d, "cameras", where)),
                   action_representation=d.get("action_representation", "native"), fps=d.get("fps"),
                   state_names=_opt_tuple(d.get("state_names")), action_names=_opt_tuple(d.get("action_names")))


def embodiment_record(name: str, shard: pa.Table, action_representation: str, declared: Mapping | None = None
                      ) -> EmbodimentRecord:
    """The record of robot dataset `name` from one of its prepared shards (columns state, action,
    image_views; robot rows) and what its source declares (syvla.data.readers.declared_metadata)."""
    declared = declared or {}
    robot = [i for i, k in enumerate(shard.column(K.KIND).to_pylist()) if k == K.KIND_ROBOT]
    if not robot:
        raise ValueError(f"dataset {name!r}: no robot rows to read its embodiment from")
    row = shard.slice(robot[0], 1).to_pylist()[0]
    state_names, action_names = declared.get("state_names"), declared.get("action_names")
    if state_names is not None and len(state_names) != len(row[K.STATE]):
        state_names = None  # names that do not match the vector are no names
    if action_representation != "native" or (action_names is not None and len(action_names) != len(row[K.ACTION])):
        action_names = None
    fps = declared.get("fps")
    return EmbodimentRecord(name=name, state_dim=len(row[K.STATE]), action_dim=len(row[K.ACTION]),
                            cameras=tuple(row[K.IMAGE_VIEWS]), action_representation=action_representation,
                            fps=None if fps is None else float(fps), state_names=_opt_tuple(state_names),
                            action_names=_opt_tuple(action_names))


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
    """One prepared dataset."""

    path: str  # its shard folder, relative to the prepared root
    source: str  # the input it was prepared from
    files: int  # shards written
    frames: int  # rows written (one chunked sample each)
    episodes: int  # episodes kept
    kind: str | None = None  # K.KIND_ROBOT or K.KIND_VQA ("robot+vqa" if an input held both); None: not recorded
    embodiment: EmbodimentRecord | None = None  # robot datasets

    def to_dict(self) -> dict:
        d = {"path": self.path, "source": self.source, "files": self.files, "frames": self.frames,
             "episodes": self.episodes, "kind": self.kind}
        if self.embodiment is not None:
            d["embodiment"] = self.embodiment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> "DatasetEntry":
        emb = d.get("embodiment")
        return cls(path=_required(d, "path", where), source=_required(d, "source", where),
                   files=int(_required(d, "files", where)), frames=int(_required(d, "frames", where)),
                   episodes=int(_required(d, "episodes", where)), kind=d.get("kind"),
                   embodiment=None if emb is None else EmbodimentRecord.from_dict(emb, f"{where} embodiment"))


@dataclasses.dataclass(frozen=True)
class Manifest:
    """manifest.json: how the shards were prepared and what each dataset holds."""

    chunk_len: int  # actions per chunk
    datasets: dict[str, DatasetEntry] = dataclasses.field(default_factory=dict)  # by dataset name, in input order
    action_representation: str = "native"  # syvla.data.actions.ACTION_REPRESENTATIONS
    eef_rotation: str = "axis_angle"  # rotation form of eef_relative actions
    format_version: int = FORMAT_VERSION
    origin: str = ""  # who prepared it: "" = a user's request (never rewritten by syvla), DEMO_ORIGIN = the demo step

    def to_dict(self) -> dict:
        return {"format_version": self.format_version, "chunk_len": self.chunk_len,
                "action_representation": self.action_representation, "eef_rotation": self.eef_rotation,
                "origin": self.origin, "datasets": {name: e.to_dict() for name, e in self.datasets.items()}}

    @classmethod
    def from_dict(cls, d: Mapping, where: str = MANIFEST_FILE) -> "Manifest":
        version = int(d.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise ValueError(f"{where}: field 'format_version' is {version}; this syvla reads up to {FORMAT_VERSION}")
        datasets = _required(d, "datasets", where)
        return cls(chunk_len=int(_required(d, "chunk_len", where)),
                   datasets={name: DatasetEntry.from_dict(e, f"{where} dataset {name!r}") for name, e in datasets.items()},
                   action_representation=d.get("action_representation", "native"),
                   eef_rotation=d.get("eef_rotation", "axis_angle"), format_version=version,
                   origin=d.get("origin", ""))

    def entry(self, name: str, root: str | Path = "") -> DatasetEntry:
        if name not in self.datasets:
            raise KeyError(f"prepared data at {root} has no dataset {name!r}; has {sorted(self.datasets)}")
        return self.datasets[name]


def write_manifest(root: str | Path, manifest: Manifest) -> Path:
    path = manifest_path(root)
    path.write_text(json.dumps(manifest.to_dict(), indent=1))
    return path


def read_manifest(root: str | Path) -> Manifest:
    """The manifest of a prepared root; FileNotFoundError when `root` is not one."""
    path = manifest_path(root)
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: {root} is not a prepared dataset (run pipelines/prepare_data.py)")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from e
    return Manifest.from_dict(d, str(path))


def shard_dirs(root: str | Path, manifest: Manifest | None = None) -> dict[str, Path]:
    """{dataset name: its shard folder} under a prepared root."""
    manifest = read_manifest(root) if manifest is None else manifest
    return {name: Path(root) / e.path for name, e in manifest.datasets.items()}


def write_report(root: str | Path, report: CleaningReport) -> Path:
    path = report_path(root)
    report.save(path)
    return path


def read_report(root: str | Path) -> CleaningReport:
    return CleaningReport.load(report_path(root))


__all__ = ["FORMAT_VERSION", "MANIFEST_FILE", "REPORT_FILE", "NORM_STATS_FILE", "CACHE_DIR", "SHARD_GLOB",
           "Manifest", "DatasetEntry", "EmbodimentRecord", "embodiment_record", "read_manifest", "write_manifest",
           "read_report", "write_report", "load_norm_stats", "manifest_path", "report_path", "norm_stats_path",
           "cache_dir", "shard_name", "cache_name", "shard_dirs"]
