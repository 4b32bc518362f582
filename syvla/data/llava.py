"""LLaVA-style multimodal JSON -> FRAME_SCHEMA rows of kind "vqa".

Input: a JSON list of samples
    {"id": "000001", "image": "coco/1.jpg" | ["a.jpg", "b.jpg"] (optional),
     "conversations": [{"from": "human", "value": "<image>\\nWhat is ...?"},
                       {"from": "gpt", "value": "A cat."}, ...]}
and an image folder the paths are relative to (default: the JSON's folder).

Output rows (docs/architecture.md#data-contracts): kind "vqa", one row per
sample (frame_index 0), images as encoded bytes with views "image" (or
"image_0", "image_1", ... for several), empty state/action, `task` = the first
user turn, `conversation` = JSON [{"role": "user"|"assistant"|"system", "content"}].
The "<image>" placeholders are removed from the text: the images travel in
`images`, and the model's processor inserts its own image tokens.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from syvla import constants as K
from syvla.data import images
from syvla.data.schema import FRAME_SCHEMA, SchemaError, conform

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_IMAGE_TOKEN = re.compile(r"\s*<image>\s*")
DEFAULT_ROWS_PER_TABLE = 1000


def _clean(text: str) -> str:
    return _IMAGE_TOKEN.sub(" ", text).strip()


def _views(n: int) -> list[str]:
    return ["image"] if n == 1 else [f"image_{i}" for i in range(n)]


def sample_row(sample: dict, index: int, image_folder: Path, name: str, src: str, max_side: int | None = None) -> dict:
    """One LLaVA sample -> one FRAME_SCHEMA row (dict)."""
    where = f"{src} sample {index} (id {sample.get('id')!r})" if isinstance(sample, dict) else f"{src} sample {index}"
    if not isinstance(sample, dict):
        raise SchemaError(f"{where}: expected an object, got {type(sample).__name__}")
    convs = sample.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise SchemaError(f"{where}: field 'conversations' must be a non-empty list")
    turns = []
    for j, turn in enumerate(convs):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise SchemaError(f"{where}: field 'conversations[{j}]' needs 'from' and 'value'")
        role = ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise SchemaError(f"{where}: field 'conversations[{j}].from' is {turn['from']!r}; expected one of {sorted(ROLES)}")
        if not isinstance(turn["value"], str):
            raise SchemaError(f"{where}: field 'conversations[{j}].value' must be a string")
        turns.append({"role": role, "content": _clean(turn["value"])})
    first_user = next((t["content"] for t in turns if t["role"] == "user"), None)
    if first_user is None:
        raise SchemaError(f"{where}: field 'conversations' has no human/user turn")
    rel = sample.get("image")
    paths = [] if rel is None else [rel] if isinstance(rel, str) else rel
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise SchemaError(f"{where}: field 'image' must be a path or a list of paths")
    blobs = []
    for p in paths:
        path = Path(p) if os.path.isabs(p) else image_folder / p
        if not path.is_file():
            raise SchemaError(f"{where}: field 'image' names {path}, which does not exist")
        data = path.read_bytes()
        img_src = f"{where} image {path}"
        if max_side is not None:
            img = images.decode(data, img_src)
            h, w = img.shape[:2]
            if max(h, w) > max_side:
                s = max_side / max(h, w)
                img = images.resize(img, (max(1, round(h * s)), max(1, round(w * s))))
            blobs.append(images.encode_png(img, img_src))
        elif images.image_format(data) is not None:
            images.image_size(data, img_src)  # header check only; raises naming the file
            blobs.append(data)
        else:  # WebP, GIF, ...: re-encode so readers only ever see PNG/JPEG
            blobs.append(images.encode_png(images.decode(data, img_src), img_src))
    return {
        K.DATASET: name,
        K.EPISODE_ID: index,
        K.FRAME_INDEX: 0,
        K.TIMESTAMP: 0.0,
        K.TASK: first_user,
        K.COT: None,
        K.IMAGE_VIEWS: _views(len(blobs)) if blobs else [],
        K.IMAGES: blobs,
        K.STATE: [],
        K.ACTION: [],
        K.SUCCESS: None,
        K.KIND: K.KIND_VQA,
        K.CONVERSATION: json.dumps(turns, ensure_ascii=False),
    }


def read_llava(json_path: str | os.PathLike, name: str | None = None, image_folder: str | os.PathLike | None = None,
               rows_per_table: int = DEFAULT_ROWS_PER_TABLE, max_side: int | None = None) -> Iterator[pa.Table]:
    """Yield FRAME_SCHEMA tables of up to `rows_per_table` VQA rows (episode_id = position in the list).

    name: dataset name (default: the JSON file's stem). max_side: downscale
    images whose longer side exceeds it (None keeps the original bytes).
    """
    json_path = Path(json_path)
    if rows_per_table < 1:
        raise ValueError(f"rows_per_table must be >= 1, got {rows_per_table}")
    try:
        with open(json_path) as f:
            samples = json.load(f)
    except json.JSONDecodeError as e:
        raise SchemaError(f"{json_path}: invalid JSON: {e}") from e
    if not isinstance(samples, list):
        raise SchemaError(f"{json_path}: expected a JSON list of samples, got {type(samples).__name__}")
    folder = Path(image_folder) if image_folder is not None else json_path.parent
    name = name or json_path.stem
    for start in range(0, len(samples), rows_per_table):
        rows = [sample_row(s, start + i, folder, name, str(json_path), max_side)
                for i, s in enumerate(samples[start:start + rows_per_table])]
        yield conform(pa.Table.from_pylist(rows, schema=FRAME_SCHEMA), source=str(json_path))


__all__ = ["read_llava", "sample_row", "ROLES"]
