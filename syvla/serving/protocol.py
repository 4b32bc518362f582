"""The robot API's wire format: encodings, request parsing and validation.

Pure functions over numpy, msgpack and the standard library, shared by the
server and the robot client (which must load neither torch nor ray). PIL is
imported lazily, only by the server when it decodes PNG/JPEG images.

Two encodings carry the same documents (docs/serving.md):
- JSON (`application/json`): images as base64 strings of PNG/JPEG bytes, or
  arrays `{"dtype", "shape", "data": base64}`; vectors as number lists.
- msgpack (`application/msgpack`): images as raw PNG/JPEG bytes or arrays
  `{"dtype", "shape", "data": bytes}` (row-major, little-endian); vectors as
  arrays or number lists.

Every validation failure raises `ProtocolError` naming the offending field and
the 4xx status the server answers with; nothing is filled in silently.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import io
import json
import math
import re
import struct
import zlib
from typing import Any, Callable, Iterable, Mapping

import msgpack
import numpy as np

JSON = "json"
MSGPACK = "msgpack"
ENCODINGS = (JSON, MSGPACK)
CONTENT_TYPES = {JSON: "application/json", MSGPACK: "application/msgpack"}
_MSGPACK_ALIASES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")

API_KEY_HEADER = "x-api-key"

# Episode ids carry the policy version the episode is pinned to, so any replica can serve any
# episode without shared episode state, and an HMAC of both under the app's secret, so the server
# can tell its own ids from made-up or edited ones (docs/serving.md#policy-versions-and-episodes).
_EPISODE_RE = re.compile(r"^ep-([0-9a-f]{32})-v(\d{1,18})-([0-9a-f]{32})$")
_BLIND_EPISODE_RE = re.compile(r"^ep-([0-9a-f]{32})-([0-9a-f]{32})$")  # blind servers: the version is in the tag only

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_ARRAY_KEYS = {"dtype", "shape", "data"}
_STATE_DTYPES = ("float32", "float64")
_MAX_SEED = 2**63 - 1

# What /v1/metadata says the server accepts (docs/serving.md#encodings).
FORMATS = {
    "encodings": {"json": "application/json", "msgpack": "application/msgpack (also application/x-msgpack, "
                                                          "application/vnd.msgpack)"},
    "image": ["png (8-bit RGB)", "jpeg (RGB)", "array {dtype: uint8, shape: [H, W, 3], data}"],
    "state_dtypes": list(_STATE_DTYPES),
    "base64": "standard alphabet with padding (RFC 4648 section 4), no line breaks; JSON only",
    "array_byte_order": "row-major, little-endian",
}


class ProtocolError(ValueError):
    """A request the server refuses: `status` is the HTTP code, `field` the offending field."""

    def __init__(self, status: int, field: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.field = field
        self.message = message
        self.headers = dict(headers or {})  # e.g. Retry-After on a 503, Connection: close past an unread body

    def to_dict(self) -> dict:
        return {"error": {"status": self.status, "field": self.field, "message": self.message}}


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what one request may carry (the server's defence against bad robots)."""

    max_body_bytes: int = 16 * 2**20  # whole request body
    max_image_side: int = 1024  # pixels, either side of any camera image
    max_instruction_chars: int = 2048
    max_deadline_ms: float = 600_000.0  # a robot may ask for at most this budget

    def __post_init__(self):
        for name in ("max_body_bytes", "max_image_side", "max_instruction_chars", "max_deadline_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class ActRequest:
    """A validated `/v1/act` request, ready for `Policy.infer`."""

    episode_id: str
    policy_version: int  # the version the episode is pinned to (from its id)
    embodiment: str
    images: dict  # {camera: uint8 [H, W, 3]}
    state: np.ndarray  # float32 [state_dim]
    instruction: str
    think: bool = False
    seed: int | None = None
    step: int | None = None  # the robot's step counter within the episode, when it sends one
    deadline_ms: float | None = None  # budget the robot gave, measured from arrival at the server
    raw_images: dict | None = None  # {camera: bytes | array dict} as received, for the replay buffer
    prefix_actions: np.ndarray | None = None  # real-time chunking: float32 [n, action_dim] the robot will execute
    prefix_delay: int = 0  # ... of which this many run before the answer arrives

    def to_obs(self) -> dict:
        """The `Policy.infer` observation (docs/architecture.md, Policy API)."""
        obs = {"embodiment": self.embodiment, "images": self.images, "state": self.state,
               "instruction": self.instruction, "think": self.think, "seed": self.seed}
        if self.prefix_actions is not None:
            obs.update(prefix_actions=self.prefix_actions, prefix_delay=self.prefix_delay)
        return obs


# ---------------------------------------------------------------- encodings

def encoding_of(content_type: str | None) -> str:
    """`json` or `msgpack` from a Content-Type header; 415 for anything else, a missing one included."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not media:
        raise ProtocolError(415, "content-type", "missing; use application/json or application/msgpack")
    if media == "application/json":
        return JSON
    if media in _MSGPACK_ALIASES:
        return MSGPACK
    raise ProtocolError(415, "content-type", f"unsupported media type {media!r}; use application/json or application/msgpack")


def response_encoding(accept: str | None, request_encoding: str) -> str:
    """Encoding of the reply: what Accept asks for, else the request's own."""
    accept = (accept or "").lower()
    if any(alias in accept for alias in _MSGPACK_ALIASES):
        return MSGPACK
    if "application/json" in accept:
        return JSON
    return request_encoding


def encode(obj: Any, encoding: str) -> bytes:
    if encoding == MSGPACK:
        return msgpack.packb(obj, use_bin_type=True)
    if encoding == JSON:
        return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


def decode(body: bytes, encoding: str) -> Any:
    """Parse a body; a corrupt one is a 400 naming the body."""
    try:
        if encoding == MSGPACK:
            return msgpack.unpackb(body, raw=False, strict_map_key=True)
        return json.loads(body) if body else {}
    except Exception as exc:  # every parser failure is the robot's malformed body, never a 500
        raise ProtocolError(400, "body", f"cannot decode {encoding}: {type(exc).__name__}: {exc}"[:300]) from None


# ---------------------------------------------------------------- arrays and images

def pack_array(arr: np.ndarray, binary: bool = True) -> dict:
    """`{"dtype", "shape", "data"}` (row-major, little-endian); data is bytes, or base64 text for JSON."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    data = arr.tobytes()
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": data if binary else base64.b64encode(data).decode()}


def unpack_array(obj: Any, field: str, dtypes: tuple[str, ...] | None = None) -> np.ndarray:
    """Inverse of `pack_array`, validating dtype, shape and byte count."""
    if not isinstance(obj, Mapping) or set(obj) != _ARRAY_KEYS:
        raise ProtocolError(422, field, 'expected an array {"dtype", "shape", "data"}')
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if not isinstance(dtype, str) or (dtypes is not None and dtype not in dtypes):
        raise ProtocolError(422, field, f"dtype must be one of {dtypes}, got {dtype!r}")
    try:
        np_dtype = np.dtype(dtype).newbyteorder("<")
    except (TypeError, ValueError):
        raise ProtocolError(422, field, f"unknown dtype {dtype[:40]!r}") from None
    if np_dtype.hasobject or np_dtype.kind not in "biuf":
        raise ProtocolError(422, field, f"dtype {dtype!r} is not a numeric dtype")
    if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(s) and 0 <= s < 2**31 for s in shape):
        raise ProtocolError(422, field, f"shape must be a list of up to 8 non-negative ints, got {str(shape)[:80]}")
    if isinstance(data, str):
        data = _b64(data, field)
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError(422, field, "data must be bytes (msgpack) or base64 text (JSON)")
    expected = math.prod(shape) * np_dtype.itemsize
    if len(data) != expected:
        raise ProtocolError(422, field, f"data has {len(data)} bytes, shape {shape} of {dtype} needs {expected}")
    # bytearray: a writable copy (torch warns on, and must not alias, read-only request buffers).
    return np.frombuffer(bytearray(data), dtype=np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="), copy=False)


def encode_png(image: np.ndarray) -> bytes:
    """A PNG of a uint8 [H, W, 3] image with the standard library only (the robot has no PIL)."""
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"encode_png needs uint8 [H, W, 3], got {image.dtype} {image.shape}")
    h, w, _ = image.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return _PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")


def decode_image(value: Any, field: str, max_side: int) -> np.ndarray:
    """uint8 [H, W, 3] from PNG/JPEG bytes, base64 text of them, or an array dict."""
    if isinstance(value, Mapping):
        arr = unpack_array(value, field, dtypes=("uint8",))
    else:
        if isinstance(value, str):
            value = _b64(value, field)
        if not isinstance(value, (bytes, bytearray)):
            raise ProtocolError(422, field, "expected PNG/JPEG bytes, base64 text, or an array dict")
        arr = _decode_encoded_image(bytes(value), field, max_side)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ProtocolError(422, field, f"image must be [H, W, 3] uint8, got shape {list(arr.shape)}")
    if max(arr.shape[:2]) > max_side:
        raise ProtocolError(413, field, f"image side {max(arr.shape[:2])} exceeds the limit {max_side}")
    return arr


def _check_png_header(data: bytes, field: str, max_side: int) -> None:
    """Size, bit depth and colour type from the IHDR chunk, before any decoder runs: a header claiming
    a huge image is 413 (not a decompression-bomb error), and only 8-bit RGB is taken (nothing cut silently)."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ProtocolError(422, field, "corrupt image: PNG without an IHDR header")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if max(width, height) > max_side:
        raise ProtocolError(413, field, f"image side {max(width, height)} exceeds the limit {max_side}")
    if depth != 8 or colour != 2:
        kind = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}.get(colour, f"type {colour}")
        raise ProtocolError(422, field, f"PNG must be 8-bit RGB, got {depth}-bit {kind}")


def _decode_encoded_image(data: bytes, field: str, max_side: int) -> np.ndarray:
    if not (data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC)):
        raise ProtocolError(422, field, "image bytes are neither PNG nor JPEG")
    if data.startswith(_PNG_MAGIC):
        _check_png_header(data, field, max_side)
    from PIL import Image  # server side only

    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as img:
            # The header gives the size before any pixel is decoded: refuse
            # decompression bombs before they cost memory.
            if max(img.size) > max_side:
                raise ProtocolError(413, field, f"image side {max(img.size)} exceeds the limit {max_side}")
            if img.mode != "RGB":
                raise ProtocolError(422, field, f"image mode must be RGB, got {img.mode}")
            img.load()
            return np.asarray(img, dtype=np.uint8)
    except ProtocolError:
        raise
    except Image.DecompressionBombError as exc:  # a JPEG header claiming more pixels than PIL will decode
        raise ProtocolError(413, field, f"image too large: {exc}"[:300]) from None
    except Exception as exc:  # truncated or corrupt PNG/JPEG data
        raise ProtocolError(422, field, f"corrupt image: {type(exc).__name__}: {exc}"[:300]) from None


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(422, field, "invalid base64") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ---------------------------------------------------------------- episodes

def _episode_tag(uid_hex: str, policy_version: int, secret: bytes) -> str:
    return hmac.new(secret, f"{uid_hex}-v{int(policy_version)}".encode(), hashlib.sha256).hexdigest()[:32]


def make_episode_id(uid_hex: str, policy_version: int, secret: bytes, blind: bool = False) -> str:
    """`ep-<uid>-v<version>-<tag>`: the tag signs uid and version with the server's secret.

    blind: `ep-<uid>-<tag>`, the same tag without the version in clear, so neither the robot side nor an
    operator can read which policy runs; the server recovers it by checking the tag against its held
    versions (`parse_episode_id(..., versions=)`).
    """
    tag = _episode_tag(uid_hex, policy_version, secret)
    return f"ep-{uid_hex}-{tag}" if blind else f"ep-{uid_hex}-v{int(policy_version)}-{tag}"


def parse_episode_id(value: Any, secret: bytes, field: str = "episode_id", versions: Iterable[int] = ()) -> int:
    """The pinned policy version of an episode id this server (its `secret`) issued; 404 for any other.

    A blind id verifies against each of `versions` (the versions the server holds)."""
    if not isinstance(value, str):
        raise ProtocolError(422, field, "must be a string returned by POST /v1/episodes")
    match = _EPISODE_RE.match(value)
    if match is not None:
        if hmac.compare_digest(match.group(3), _episode_tag(match.group(1), int(match.group(2)), secret)):
            return int(match.group(2))
    elif (blind := _BLIND_EPISODE_RE.match(value)) is not None:
        for version in versions:
            if hmac.compare_digest(blind.group(2), _episode_tag(blind.group(1), version, secret)):
                return int(version)
    raise ProtocolError(404, field, f"unknown episode id {value[:80]!r}: not issued by this server")


def episode_label(episode_id: str) -> str:
    """A short handle for people (operator page, reports): the first 8 hex digits of the episode's uid."""
    return episode_id[3:11]


# ---------------------------------------------------------------- requests

def _require_map(obj: Any, field: str = "body") -> Mapping:
    if not isinstance(obj, Mapping):
        raise ProtocolError(422, field, f"must be an object/map, got {type(obj).__name__}")
    return obj


def _unknown_keys(obj: Mapping, allowed: set, prefix: str = "") -> None:
    extra = [k for k in obj if k not in allowed]
    if extra:
        raise ProtocolError(422, prefix + str(extra[0])[:60], f"unknown field; allowed: {sorted(allowed)}")


def parse_state(value: Any, state_dim: int, field: str = "state") -> np.ndarray:
    if isinstance(value, Mapping):
        arr = unpack_array(value, field, dtypes=_STATE_DTYPES)
    elif isinstance(value, list):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ProtocolError(422, field, "must be a list of numbers")
        arr = np.asarray(value, dtype=np.float64)
    else:
        raise ProtocolError(422, field, "must be a list of numbers or an array dict")
    if arr.shape != (state_dim,):
        raise ProtocolError(422, field, f"shape must be [{state_dim}], got {list(arr.shape)}")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ProtocolError(422, f"{field}[{bad}]", "must be finite (NaN/inf, or too large for float32)")
    return arr


_ACT_FIELDS = {"episode_id", "embodiment", "images", "state", "instruction", "think", "seed", "step", "deadline_ms",
               "prefix_actions", "prefix_delay"}


def parse_prefix(obj: Mapping, action_dim: int) -> tuple[np.ndarray | None, int]:
    """Real-time chunking fields of an act body: `prefix_actions` (rows of `action_dim` numbers or a packed
    float32 array, finite; its bound, the chunk length, is Policy.validate's) and `prefix_delay` (an int in
    0..rows; needs the prefix)."""
    value, delay = obj.get("prefix_actions"), obj.get("prefix_delay", 0)
    if value is None:
        if delay not in (0, None):
            raise ProtocolError(422, "prefix_delay", "needs prefix_actions")
        return None, 0
    if isinstance(value, Mapping):
        arr = unpack_array(value, "prefix_actions", dtypes=("float32",))
    else:
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = np.asarray(value, dtype=np.float64).astype(np.float32)
        except (TypeError, ValueError):
            raise ProtocolError(422, "prefix_actions", "must be a list of action rows (numbers)") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != action_dim:
        raise ProtocolError(422, "prefix_actions", f"shape must be [n >= 1, {action_dim}], got {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ProtocolError(422, "prefix_actions", "must be finite (NaN/inf, or too large for float32)")
    if not (_is_int(delay) and 0 <= delay <= arr.shape[0]):
        raise ProtocolError(422, "prefix_delay", f"must be an int in 0..{arr.shape[0]} (the prefix's rows)")
    return arr, int(delay)


def parse_act_request(obj: Any, embodiments: Mapping[str, Mapping] | Callable[[int], Mapping], limits: Limits,
                      secret: bytes, versions: Iterable[int] = ()) -> ActRequest:
    """Validate a decoded `/v1/act` body against the served embodiments.

    `embodiments` is `Policy.metadata()["embodiments"]` of the episode's
    policy, or a function of the episode's pinned version that returns it;
    `secret` verifies the episode id (`parse_episode_id`; a blind id against `versions`).
    """
    obj = _require_map(obj)
    _unknown_keys(obj, _ACT_FIELDS)
    for key in ("episode_id", "embodiment", "images", "state", "instruction"):
        if key not in obj:
            raise ProtocolError(422, key, "missing")
    version = parse_episode_id(obj["episode_id"], secret, versions=versions)
    if callable(embodiments):
        embodiments = embodiments(version)
    embodiment = obj["embodiment"]
    if not isinstance(embodiment, str) or embodiment not in embodiments:
        raise ProtocolError(422, "embodiment", f"unknown embodiment {str(embodiment)[:60]!r}; served: {sorted(embodiments)}")
    spec = embodiments[embodiment]
    cameras = list(spec["cameras"])
    images_in = _require_map(obj["images"], "images")
    for key in images_in:
        if key not in cameras:
            raise ProtocolError(422, f"images.{str(key)[:60]}", f"unknown camera for {embodiment!r}; expected {cameras}")
    images, raw_images = {}, {}
    for cam in cameras:
        if cam not in images_in:
            raise ProtocolError(422, f"images.{cam}", f"missing camera; {embodiment!r} needs {cameras}")
        images[cam] = decode_image(images_in[cam], f"images.{cam}", limits.max_image_side)
        raw = images_in[cam]
        # Keep what the robot sent (encoded bytes stay encoded); arrays are re-packed as binary.
        raw_images[cam] = pack_array(images[cam]) if isinstance(raw, Mapping) else (
            _b64(raw, f"images.{cam}") if isinstance(raw, str) else bytes(raw))
    state = parse_state(obj["state"], int(spec["state_dim"]))
    instruction = obj["instruction"]
    if not isinstance(instruction, str) or not instruction.strip():
        raise ProtocolError(422, "instruction", "must be a non-empty string")
    if len(instruction) > limits.max_instruction_chars:
        raise ProtocolError(422, "instruction", f"longer than {limits.max_instruction_chars} characters")
    think = obj.get("think", False)
    if not isinstance(think, bool):
        raise ProtocolError(422, "think", "must be a boolean")
    seed = obj.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= _MAX_SEED):
        raise ProtocolError(422, "seed", f"must be null or an int in [0, 2^63), got {str(seed)[:40]}")
    step = obj.get("step")
    if step is not None and not (_is_int(step) and 0 <= step < 2**31):
        raise ProtocolError(422, "step", "must be null or a non-negative int")
    deadline = obj.get("deadline_ms")
    if deadline is not None:
        if not isinstance(deadline, (int, float)) or isinstance(deadline, bool) or not math.isfinite(deadline) \
                or not 0 < deadline <= limits.max_deadline_ms:
            raise ProtocolError(422, "deadline_ms", f"must be a number in (0, {limits.max_deadline_ms}]")
        deadline = float(deadline)
    prefix, delay = parse_prefix(obj, int(spec["action_dim"]))
    return ActRequest(episode_id=obj["episode_id"], policy_version=version, embodiment=embodiment, images=images,
                      state=state, instruction=instruction, think=think, seed=seed, step=step,
                      deadline_ms=deadline, raw_images=raw_images, prefix_actions=prefix, prefix_delay=delay)


def parse_episode_request(obj: Any, embodiments: Mapping[str, Mapping]) -> dict:
    """`POST /v1/episodes`: optional `embodiment` and `instruction`, recorded with the episode."""
    obj = _require_map(obj)
    _unknown_keys(obj, {"embodiment", "instruction"})
    embodiment = obj.get("embodiment")
    if embodiment is not None and (not isinstance(embodiment, str) or embodiment not in embodiments):
        raise ProtocolError(422, "embodiment", f"unknown embodiment {str(embodiment)[:60]!r}; served: {sorted(embodiments)}")
    instruction = obj.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or len(instruction) > 2048):
        raise ProtocolError(422, "instruction", "must be a string of at most 2048 characters")
    return {"embodiment": embodiment, "instruction": instruction}


def parse_reward_request(obj: Any) -> int:
    """`POST /v1/episodes/{id}/reward`: `{"reward": 0 | 1}` (a human's or the simulator's verdict)."""
    obj = _require_map(obj)
    _unknown_keys(obj, {"reward"})
    if "reward" not in obj:
        raise ProtocolError(422, "reward", "missing")
    reward = obj["reward"]
    if isinstance(reward, bool):
        return int(reward)
    if isinstance(reward, (int, float)) and reward in (0, 1):
        return int(reward)
    raise ProtocolError(422, "reward", f"must be 0 or 1, got {str(reward)[:40]}")


# ---------------------------------------------------------------- responses

def act_response(episode_id: str, actions: np.ndarray, policy_version: int, latest_version: int,
                 cot: str | None, step: int | None, timing: dict, encoding: str) -> dict:
    actions = np.asarray(actions, dtype=np.float32)
    return {
        "episode_id": episode_id,
        "step": step,
        "actions": pack_array(actions) if encoding == MSGPACK else actions.tolist(),
        "policy_version": int(policy_version),
        "latest_policy_version": int(latest_version),
        "cot": cot,
        "timing": {k: round(float(v), 3) for k, v in timing.items()},
    }


def parse_actions(value: Any) -> np.ndarray:
    """Client side: the action chunk of an act response, float32 [chunk, action_dim]."""
    if isinstance(value, Mapping):
        return unpack_array(value, "actions", dtypes=("float32",))
    return np.asarray(value, dtype=np.float32)
