"""RLDS / Open X-Embodiment TFDS folders -> FRAME_SCHEMA, without TensorFlow.

A TFDS folder `<name>/<version>/` holds dataset_info.json, features.json and
`<name>-<split>.tfrecord-NNNNN-of-MMMMM` shards. One record is one episode: a
tf.train.Example with flattened keys (../shared/notes/formats.md):

  steps/observation/<camera>      bytes, one JPEG/PNG per step
  steps/observation/<tensor>      float/int, steps x dim, flattened
  steps/action  (or steps/action/<part>...)   float, steps x dim, flattened
  steps/is_first|is_last|is_terminal, steps/reward, steps/discount
  steps/language_instruction      bytes, one per step
  episode_metadata/...

Records are framed as: uint64 length, uint32 masked crc32c(length), data,
uint32 masked crc32c(data); both checksums are verified. Examples are parsed
with the protobuf classes bundled in the `tfrecord` package.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from syvla import constants as K
from syvla.data import images
from syvla.data.schema import SchemaError, conform

STEPS = "steps/"
OBS = "steps/observation/"
ACTION = "steps/action"
LANGUAGE_KEYS = ("steps/language_instruction", "steps/observation/natural_language_instruction",
                 "episode_metadata/language_instruction")
STEP_COUNT_KEYS = ("steps/is_first", "steps/is_last", "steps/reward", "steps/discount")
DEFAULT_FPS = 10.0  # RLDS stores no timestamps; most Open-X datasets record at 3-30 Hz


# --------------------------------------------------------------------------- tfrecord framing


def _masked_crc(data: bytes) -> int:
    import crc32c

    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_tfrecord(path: str | os.PathLike) -> Iterator[bytes]:
    """Yield the raw records of an uncompressed tfrecord file, checking both CRCs."""
    path = Path(path)
    with open(path, "rb") as f:
        i = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) != 12:
                raise SchemaError(f"{path}: record {i} is truncated (length header)")
            length, length_crc = struct.unpack("<QI", head)
            if _masked_crc(head[:8]) != length_crc:
                raise SchemaError(f"{path}: record {i} has a corrupt length header (crc mismatch)")
            data = f.read(length)
            tail = f.read(4)
            if len(data) != length or len(tail) != 4:
                raise SchemaError(f"{path}: record {i} is truncated ({len(data)} of {length} bytes)")
            if _masked_crc(data) != struct.unpack("<I", tail)[0]:
                raise SchemaError(f"{path}: record {i} is corrupt (data crc mismatch)")
            yield data
            i += 1


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write raw records (e.g. serialized tf.train.Example) as a tfrecord file; returns the count."""
    n = 0
    with open(path, "wb") as f:
        for rec in records:
            head = struct.pack("<Q", len(rec))
            f.write(head + struct.pack("<I", _masked_crc(head)) + rec + struct.pack("<I", _masked_crc(rec)))
            n += 1
    return n


def parse_example(data: bytes, source: str = "") -> dict[str, list]:
    """tf.train.Example bytes -> {key: list of values (bytes, float or int)}."""
    from tfrecord import example_pb2

    ex = example_pb2.Example()
    try:
        ex.ParseFromString(data)
    except Exception as e:  # noqa: BLE001  (protobuf's DecodeError moves between versions)
        raise SchemaError(f"{source}: not a tf.train.Example: {e}") from e
    out = {}
    for key, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        out[key] = list(getattr(feat, kind).value) if kind else []
    return out


# --------------------------------------------------------------------------- TFDS metadata


def find_tfds_dir(path: str | os.PathLike) -> Path | None:
    """`path` if it holds dataset_info.json and *.tfrecord* shards, else the newest such version folder below it."""
    p = Path(path)
    if not p.is_dir():
        return None

    def ok(d: Path) -> bool:
        return (d / "dataset_info.json").is_file() and any(d.glob("*.tfrecord*"))

    if ok(p):
        return p
    subs = [d for d in p.iterdir() if d.is_dir() and ok(d)]
    if not subs:
        return None

    def version_key(d: Path):
        parts = d.name.split(".")
        return tuple(int(x) if x.isdigit() else -1 for x in parts), d.name

    return max(subs, key=version_key)


def _feature_leaves(node: dict, prefix: str = "") -> dict[str, dict]:
    """Flatten TFDS features.json into {"steps/observation/image": {"class", "shape", "dtype", "encoding"}}."""
    out: dict[str, dict] = {}
    if not isinstance(node, dict):
        return out
    if "featuresDict" in node:
        for k, v in node["featuresDict"].get("features", {}).items():
            out.update(_feature_leaves(v, f"{prefix}{k}/"))
        return out
    if "sequence" in node:
        return _feature_leaves(node["sequence"].get("feature", {}), prefix)
    cls = node.get("pythonClassName", "").rsplit(".", 1)[-1]
    spec = node.get("image") or node.get("tensor") or node.get("text") or {}
    dims = (spec.get("shape") or {}).get("dimensions") or []
    out[prefix.rstrip("/")] = {
        "class": cls,
        "shape": [int(d) for d in dims],
        "dtype": spec.get("dtype"),
        "encoding": spec.get("encodingFormat"),
    }
    return out


def _load_features(d: Path) -> dict[str, dict]:
    path = d / "features.json"
    if not path.is_file():
        return {}
    try:
        return _feature_leaves(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: invalid JSON: {e}") from e


def _shards(d: Path, split: str) -> list[Path]:
    files = sorted(d.glob(f"*-{split}.tfrecord*"))
    if not files:
        raise SchemaError(f"{d}: no '*-{split}.tfrecord*' shards (RLDS/TFDS layout)")
    return files


# --------------------------------------------------------------------------- reader


class RLDSReader:
    """Reads a TFDS/RLDS folder episode by episode.

    state_keys: observation tensors concatenated into `state`, in order
      (default: every numeric steps/observation/* key, features.json order, else sorted).
    image_keys: camera keys under steps/observation/ (default: every image feature / JPEG-PNG bytes key).
    default_task: instruction for datasets without a language key (else SchemaError).
    fps: rate used for `timestamp` = frame_index / fps.
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None, split: str = "train",
                 state_keys: Iterable[str] | None = None, image_keys: Iterable[str] | None = None,
                 default_task: str | None = None, fps: float = DEFAULT_FPS):
        root = find_tfds_dir(path)
        if root is None:
            raise SchemaError(f"{path}: not a TFDS folder (needs dataset_info.json and *.tfrecord-* shards)")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.root = root
        info_path = root / "dataset_info.json"
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise SchemaError(f"{info_path}: invalid JSON: {e}") from e
        self.name = name or self.info.get("name") or root.parent.name
        self.features = _load_features(root)
        self.files = _shards(root, split)
        self.state_keys = None if state_keys is None else [self._obs_key(k) for k in state_keys]
        self.image_keys = None if image_keys is None else [self._obs_key(k) for k in image_keys]
        self.default_task = default_task
        self.fps = float(fps)

    @staticmethod
    def _obs_key(k: str) -> str:
        return k if k.startswith(STEPS) else OBS + k

    def _classify(self, ex: dict[str, list]) -> tuple[list[str], list[str]]:
        """(image keys, state keys) of an episode, from features.json when present, else from the values."""
        if self.image_keys is not None:
            image_keys = self.image_keys
        elif self.features:
            image_keys = [k for k, f in self.features.items() if k.startswith(OBS) and f["class"] == "Image"]
        else:
            image_keys = [k for k in sorted(ex) if k.startswith(OBS) and ex[k] and isinstance(ex[k][0], bytes)
                          and images.image_format(ex[k][0]) is not None]
        if self.state_keys is not None:
            state_keys = self.state_keys
        else:
            order = list(self.features) if self.features else sorted(ex)
            if self.features:  # declared numeric tensors; one missing from a record is an error below
                state_keys = [k for k in order if k.startswith(OBS) and k not in image_keys
                              and self.features[k]["class"] in ("Tensor", "Scalar")
                              and self.features[k]["dtype"] not in ("string", None)]
            else:
                state_keys = [k for k in order if k.startswith(OBS) and k not in image_keys
                              and (not ex[k] or not isinstance(ex[k][0], bytes))]
        return image_keys, state_keys

    def _steps(self, ex: dict, src: str) -> int:
        for k in STEP_COUNT_KEYS:
            if k in ex:
                return len(ex[k])
        if ACTION in ex and ACTION in self.features and self.features[ACTION]["shape"]:
            dim = int(np.prod(self.features[ACTION]["shape"]))
            return len(ex[ACTION]) // dim
        raise SchemaError(f"{src}: cannot count steps: none of {list(STEP_COUNT_KEYS)} present")

    def _matrix(self, ex: dict, key: str, n: int, src: str) -> np.ndarray:
        vals = ex.get(key)
        if vals is None:
            raise SchemaError(f"{src}: field {key!r} is missing")
        if len(vals) % max(n, 1):
            raise SchemaError(f"{src}: field {key!r} has {len(vals)} values, not a multiple of {n} steps")
        arr = np.asarray(vals, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
        shape = self.features.get(key, {}).get("shape")
        if shape is not None and self.features.get(key) and arr.shape[1] != int(np.prod(shape)):
            raise SchemaError(f"{src}: field {key!r} has {arr.shape[1]} values per step, features.json says shape {shape}")
        return arr

    def _image(self, data: bytes, key: str, src: str) -> bytes:
        if images.image_format(data) is not None:
            return data
        feat = self.features.get(key, {})
        shape = feat.get("shape") or []
        if shape and all(s > 0 for s in shape) and len(data) == int(np.prod(shape)):  # raw uint8 tensor
            return images.encode_png(np.frombuffer(data, np.uint8).reshape(shape), src)
        return images.encode_png(images.decode(data, src), src)

    def episode_table(self, ex: dict[str, list], episode_id: int, src: str) -> pa.Table:
        n = self._steps(ex, src)
        if n == 0:
            raise SchemaError(f"{src}: episode has no steps")
        image_keys, state_keys = self._classify(ex)
        views = [k[len(OBS):] for k in image_keys]
        per_view = []
        for k in image_keys:
            blobs = ex.get(k)
            if blobs is None:
                raise SchemaError(f"{src}: image field {k!r} is missing")
            if len(blobs) != n:
                raise SchemaError(f"{src}: image field {k!r} has {len(blobs)} images for {n} steps")
            per_view.append([self._image(b, k, f"{src} field {k!r} step {i}") for i, b in enumerate(blobs)])
        state = (np.concatenate([self._matrix(ex, k, n, src) for k in state_keys], axis=1)
                 if state_keys else np.zeros((n, 0), np.float32))
        if ACTION in ex:
            action = self._matrix(ex, ACTION, n, src)
        else:
            parts = [k for k in (self.features or sorted(ex)) if k.startswith(ACTION + "/") and k in ex]
            if not parts:
                raise SchemaError(f"{src}: field {ACTION!r} (or {ACTION}/<part>) is missing")
            action = np.concatenate([self._matrix(ex, k, n, src) for k in parts], axis=1)
        task = None
        for k in LANGUAGE_KEYS:
            if k in ex and ex[k]:
                texts = [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in ex[k]]
                if len(texts) not in (1, n):
                    raise SchemaError(f"{src}: field {k!r} has {len(texts)} texts for {n} steps")
                task = texts * n if len(texts) == 1 else texts
                break
        if task is None:
            if self.default_task is None:
                raise SchemaError(f"{src}: no instruction field ({', '.join(LANGUAGE_KEYS)}); pass default_task=")
            task = [self.default_task] * n
        success = ex.get("episode_metadata/success")
        success = bool(success[0]) if success else None
        table = pa.table({
            K.DATASET: [self.name] * n,
            K.EPISODE_ID: [episode_id] * n,
            K.FRAME_INDEX: list(range(n)),
            K.TIMESTAMP: [i / self.fps for i in range(n)],
            K.TASK: task,
            K.COT: pa.array([None] * n, pa.string()),
            K.IMAGE_VIEWS: [views] * n,
            K.IMAGES: [list(x) for x in zip(*per_view)] if per_view else [[] for _ in range(n)],
            K.STATE: pa.array(list(state), pa.list_(pa.float32())),
            K.ACTION: pa.array(list(action), pa.list_(pa.float32())),
            K.SUCCESS: pa.array([success] * n, pa.bool_()),
            K.KIND: [K.KIND_ROBOT] * n,
            K.CONVERSATION: pa.array([None] * n, pa.string()),
        })
        return conform(table, source=src)

    def __iter__(self) -> Iterator[pa.Table]:
        episode_id = 0
        for path in self.files:
            for i, rec in enumerate(iter_tfrecord(path)):
                src = f"{path} record {i}"
                yield self.episode_table(parse_example(rec, src), episode_id, src)
                episode_id += 1

    def list_episodes(self) -> list[dict]:
        out = []
        episode_id = 0
        for path in self.files:
            for i, rec in enumerate(iter_tfrecord(path)):
                src = f"{path} record {i}"
                ex = parse_example(rec, src)
                tasks = next(([b.decode("utf-8") for b in ex[k][:1]] for k in LANGUAGE_KEYS if ex.get(k)), [])
                out.append({"episode_id": episode_id, "length": self._steps(ex, src), "tasks": tasks,
                            "file": str(path), "record": i})
                episode_id += 1
        return out


def read_rlds(path: str | os.PathLike, name: str | None = None, **kwargs) -> Iterator[pa.Table]:
    """Yield one FRAME_SCHEMA table per RLDS episode (see RLDSReader for kwargs)."""
    yield from RLDSReader(path, name=name, **kwargs)


def list_rlds_episodes(path: str | os.PathLike, **kwargs) -> list[dict]:
    return RLDSReader(path, **kwargs).list_episodes()


__all__ = ["RLDSReader", "read_rlds", "list_rlds_episodes", "iter_tfrecord", "write_tfrecord", "parse_example",
           "find_tfds_dir"]
