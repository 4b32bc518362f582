"""Append-only, crash-safe replay buffer of everything the server served.

Layout (docs/serving.md#replay-buffer): a directory of segment files
`<writer_id>.<seq:06d>.seg`, one writer (= one Serve replica process) per
`writer_id`, so replicas never interleave writes. A segment is a sequence of
frames:

    magic b"SVRB" | length: uint32 LE | crc32(length bytes + payload): uint32 LE | payload

where the payload is one msgpack map (arrays as `{"dtype", "shape", "data"}`,
see syvla.serving.protocol). The first frame of every segment is a
`{"kind": "segment"}` header. A writer never reopens an existing segment: a
torn tail (a frame cut short by a crash or power loss) stays the last thing in
its segment, and the reader detects it by length/CRC and skips it.

Durability: `append`/`append_many` return only after write + flush +
`os.fsync`; the server acknowledges a request only after that. Batching
(`append_many`) shares one fsync among records but acknowledges none of them
before it. A new segment's directory entry is fsynced too.

Record kinds (all carry `kind`, `episode_id`, `time` in Unix seconds):
- `episode`: `policy_version`, `embodiment`, `instruction` (null when not given)
- `step`: `step`, `policy_version`, `embodiment`, `instruction`, `images`
  ({camera: PNG/JPEG bytes or uint8 array}), `state` (float32 array),
  `actions` (float32 [chunk, action_dim] array), `cot`, `think`, `seed`; a real-time chunking request
  also `prefix_actions` (float32 [n, action_dim], the committed prefix it was inpainted to) and
  `prefix_delay` (the steps of it that ran before the answer); with `vlm_every` > 1, `vlm_call` (the
  episode's act call whose VLM forward produced the Feature Query States this step used)
- `reward`: `reward` (0/1, or null: a label withdrawn by the operator's undo); when several arrive
  for one episode the last wins. Optional `source` ("api", "operator") and `undo_until` (Unix
  seconds): until then the operator may still withdraw it, so RL does not take it before.
- an `episode` record of a blind server also has `blind` ({group, block, slot}: its schedule slot).

Episodes are assembled here and nowhere else (`Episode.add`, used by `ReplayReader.episodes`
and by the RL rollout buffer, which folds records in as it polls a live buffer): the start
record gives version, embodiment, instruction and start time (a step's when the start record
is missing), steps are kept ordered by (step, time), and the reward posted last wins.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os
import re
import socket
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

import msgpack
import numpy as np

from syvla.serving import protocol

MAGIC = b"SVRB"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sII")  # magic, length, crc32
_MAX_RECORD = 1 << 30  # a length field above this is corruption, not a record
_SEGMENT_RE = re.compile(r"^(?P<writer>[A-Za-z0-9_.-]+)\.(?P<seq>\d{6})\.seg$")

KIND_SEGMENT, KIND_EPISODE, KIND_STEP, KIND_REWARD = "segment", "episode", "step", "reward"


def encode_frame(record: dict) -> bytes:
    payload = msgpack.packb(record, use_bin_type=True)
    length = struct.pack("<I", len(payload))
    return MAGIC + length + struct.pack("<I", zlib.crc32(length + payload)) + payload


def default_writer_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ReplayWriter:
    """One process's append-only writer. Thread-safe; every append is durable on return."""

    def __init__(self, root: str | os.PathLike, writer_id: str | None = None, segment_bytes: int = 256 * 2**20):
        if segment_bytes <= 0:
            raise ValueError(f"ReplayWriter.segment_bytes must be > 0, got {segment_bytes}")
        self.root = Path(root)
        self.writer_id = writer_id or default_writer_id()
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.writer_id):
            raise ValueError(f"ReplayWriter.writer_id must match [A-Za-z0-9_-]+, got {self.writer_id!r}")
        self.segment_bytes = segment_bytes
        self.failed: BaseException | None = None  # set when a write/fsync failed: the writer is unusable
        self._lock = threading.Lock()
        self._file = None
        self._size = 0
        self.bytes_written = 0  # over every segment of this writer (the serving metrics export it)
        self.root.mkdir(parents=True, exist_ok=True)
        # A restarted writer with the same id continues after its last segment, never inside it.
        taken = [int(m["seq"]) for m in map(_SEGMENT_RE.match, os.listdir(self.root))
                 if m and m["writer"] == self.writer_id]
        self._seq = itertools.count(max(taken, default=-1) + 1)
        self._open_segment()

    @property
    def path(self) -> Path:
        return Path(self._file.name)

    def append(self, record: dict) -> None:
        self.append_many([record])

    def append_many(self, records: Iterable[dict]) -> None:
        """Write all records with one fsync; returns only once they are on disk."""
        data = b"".join(encode_frame(r) for r in records)
        with self._lock:
            if self.failed is not None:
                raise RuntimeError(f"replay writer {self.writer_id} failed earlier: {self.failed!r}")
            try:
                if self._size and self._size + len(data) > self.segment_bytes:
                    self._close_file()
                    self._open_segment()
                self._file.write(data)
                self._file.flush()
                os.fsync(self._file.fileno())
                self._size += len(data)
                self.bytes_written += len(data)
            except BaseException as exc:
                # A failed write may have left a partial frame: stop writing to
                # this segment for good (the reader skips the torn tail).
                self.failed = exc
                raise

    def close(self) -> None:
        with self._lock:
            self._close_file()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open_segment(self) -> None:
        seq = next(self._seq)
        path = self.root / f"{self.writer_id}.{seq:06d}.seg"
        self._file = open(path, "xb")  # never append to someone else's (or an older) segment
        header = {"kind": KIND_SEGMENT, "format": FORMAT_VERSION, "writer": self.writer_id, "seq": seq,
                  "time": time.time()}
        frame = encode_frame(header)
        self._file.write(frame)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._size = len(frame)
        _fsync_dir(self.root)  # the new file's directory entry must survive a crash too

    def _close_file(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading

@dataclasses.dataclass
class Episode:
    """One episode joined across segments (and replicas): its steps in order and its reward."""

    episode_id: str
    policy_version: int | None = None
    embodiment: str | None = None
    instruction: str | None = None
    start_time: float | None = None
    steps: list = dataclasses.field(default_factory=list)  # step records, ordered by (step, time); one per step
    reward: int | None = None  # 0/1, None until posted
    reward_time: float | None = None  # when the reward in `reward` was posted
    reward_settles: float | None = None  # until when the operator may still withdraw it (undo window)
    reward_source: str | None = None  # who posted the last reward record: "api", "operator", ...
    blind: dict | None = None  # the blind schedule's slot ({group, block, slot}) when a blind server started it

    @property
    def policy_versions(self) -> set:
        return {s["policy_version"] for s in self.steps}

    def add(self, record: dict) -> None:
        """Fold one record of this episode in; records may arrive in any order, across segments."""
        kind = record.get("kind")
        if kind == KIND_EPISODE:
            self.policy_version, self.embodiment = record.get("policy_version"), record.get("embodiment")
            self.instruction, self.start_time = record.get("instruction"), record.get("time")
            self.blind = record.get("blind")
        elif kind == KIND_STEP:
            step = record.get("step")
            i = bisect.bisect_left(self.steps, (step, float("-inf")), key=_step_order) if step is not None else -1
            if 0 <= i < len(self.steps) and self.steps[i].get("step") == step:
                # a retried act (its first answer was lost): the robot ran the later answer
                if record.get("time", 0.0) < self.steps[i].get("time", 0.0):
                    return
                del self.steps[i]
            bisect.insort(self.steps, record, key=_step_order)
            if self.policy_version is None:
                self.policy_version = record.get("policy_version")
            if self.start_time is None:
                self.start_time = record.get("time")
        elif kind == KIND_REWARD:  # the last reward posted wins
            t = float(record.get("time", 0.0))
            if self.reward_time is None or t >= self.reward_time:
                self.reward_time = t
                self.reward = None if record.get("reward") is None else int(record["reward"])  # None: withdrawn
                self.reward_settles, self.reward_source = record.get("undo_until"), record.get("source")

    def settled(self, now: float | None = None) -> bool:
        """Whether the reward is final: posted, and past its undo window."""
        now = time.time() if now is None else now
        return self.reward is not None and (self.reward_settles is None or now >= self.reward_settles)


def _step_order(step: dict) -> tuple[float, float]:
    """(step index, time); records without a step index go last."""
    return (float("inf") if step.get("step") is None else step["step"], step.get("time", 0.0))


class ReplayReader:
    """Reads every segment under `root`; torn or corrupt tails are skipped and counted in `torn`."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.torn: list[tuple[str, int]] = []  # (segment name, byte offset where valid data ends)

    def segments(self) -> list[Path]:
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.iterdir() if _SEGMENT_RE.match(p.name))

    def records(self, kinds: Iterable[str] | None = None, decode: bool = True) -> Iterator[dict]:
        """Every intact record (segment headers excluded), segment by segment.

        decode=True turns arrays into numpy and images into uint8 [H, W, 3].
        """
        self.torn = []
        wanted = set(kinds) if kinds is not None else None
        for path in self.segments():
            for record, _ in self._read_segment(path, 0):
                if record.get("kind") == KIND_SEGMENT or (wanted is not None and record.get("kind") not in wanted):
                    continue
                yield decode_record(record) if decode else record

    def poll(self, cursor: dict | None = None, decode: bool = True) -> tuple[list[dict], dict]:
        """Records written since `cursor` ({segment name: byte offset}) and the new cursor.

        For a consumer that follows a live buffer (the RL rollout buffer): a
        frame still being written is not returned until it is complete.
        """
        cursor = dict(cursor or {})
        out = []
        for path in self.segments():
            offset = cursor.get(path.name, 0)
            for record, end in self._read_segment(path, offset):
                cursor[path.name] = end
                if record.get("kind") != KIND_SEGMENT:
                    out.append(decode_record(record) if decode else record)
        return out, cursor

    def follow(self, cursor: dict | None = None) -> tuple[list[tuple[dict, tuple[str, int]]], dict]:
        """As `poll` (undecoded), with each record's location (segment name, byte offset) for `read_at`."""
        cursor = dict(cursor or {})
        out = []
        for path in self.segments():
            start = cursor.get(path.name, 0)
            for record, end in self._read_segment(path, start):
                if record.get("kind") != KIND_SEGMENT:
                    out.append((record, (path.name, start)))
                cursor[path.name] = start = end
        return out, cursor

    def read_at(self, location: tuple[str, int], decode: bool = True) -> dict:
        """The record at a location `follow` gave."""
        name, offset = location
        if not _SEGMENT_RE.match(name):
            raise ValueError(f"not a replay segment name: {name!r}")
        for record, _ in self._read_segment(self.root / name, offset):
            return decode_record(record) if decode else record
        raise ValueError(f"no intact record at {name}:{offset}")

    def episodes(self, decode: bool = True) -> dict[str, Episode]:
        """Episodes by id, steps ordered, reward attached (the last one posted)."""
        episodes: dict[str, Episode] = {}
        for rec in self.records(decode=decode):
            eid = rec.get("episode_id")
            if isinstance(eid, str):
                episodes.setdefault(eid, Episode(eid)).add(rec)
        return episodes

    def _read_segment(self, path: Path, offset: int) -> Iterator[tuple[dict, int]]:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            pos = offset
            while pos < size:
                header = f.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                magic, length, crc = _HEADER.unpack(header)
                if magic != MAGIC or length > _MAX_RECORD or pos + _HEADER.size + length > size:
                    break
                payload = f.read(length)
                if len(payload) < length or zlib.crc32(header[4:8] + payload) != crc:
                    break
                try:
                    record = msgpack.unpackb(payload, raw=False, strict_map_key=True)
                except Exception:
                    break
                if not isinstance(record, dict):
                    break
                pos += _HEADER.size + length
                yield record, pos
        if pos < size:
            self.torn.append((path.name, pos))


def decode_record(record: dict) -> dict:
    """numpy arrays for `state`/`actions`, uint8 [H, W, 3] images for `images`."""
    out = dict(record)
    for key in ("state", "actions", "prefix_actions"):
        if isinstance(out.get(key), dict):
            out[key] = protocol.unpack_array(out[key], key)
    if isinstance(out.get("images"), dict):
        out["images"] = {cam: protocol.decode_image(v, f"images.{cam}", max_side=1 << 16)
                         for cam, v in out["images"].items()}
    return out


def step_record(episode_id: str, step: int | None, policy_version: int, embodiment: str, instruction: str,
                images: dict, state: np.ndarray, actions: np.ndarray, cot: str | None, think: bool,
                seed: int | None, now: float | None = None, prefix_actions: np.ndarray | None = None,
                prefix_delay: int = 0, vlm_call: int | None = None) -> dict[str, Any]:
    """A `step` record; `images` are the camera payloads as the robot sent them (bytes or array dicts).
    A real-time chunking request also records its committed prefix and delay (so RL knows what ran)."""
    record = {"kind": KIND_STEP, "episode_id": episode_id, "step": step, "time": time.time() if now is None else now,
              "policy_version": int(policy_version), "embodiment": embodiment, "instruction": instruction,
              "images": images, "state": protocol.pack_array(np.asarray(state, np.float32)),
              "actions": protocol.pack_array(np.asarray(actions, np.float32)), "cot": cot, "think": think, "seed": seed}
    if prefix_actions is not None:
        record["prefix_actions"] = protocol.pack_array(np.asarray(prefix_actions, np.float32))
        record["prefix_delay"] = int(prefix_delay)
    if vlm_call is not None:
        record["vlm_call"] = int(vlm_call)
    return record
