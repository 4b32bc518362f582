"""Action chunks per frame, image decoding/resizing, and prepared rows as model samples.

* :func:`chunk_actions` / :func:`add_chunks`: for each frame t of an episode,
  ``actions[t:t + chunk_len]``; past the episode end the chunk holds still
  (`syvla.data.actions.hold_still`: no motion with the gripper kept for delta and
  EEF-relative actions, the last target repeated for absolute ones) and
  ``action_mask`` is False (columns ``constants.ACTIONS`` / ``ACTION_MASK``,
  docs/architecture.md "Chunked samples"). VQA rows get empty chunks. Fine-tuning,
  RL's expert frames and open-loop evaluation all chunk through `add_chunks`.
* :func:`loss_mask`: which chunk steps a loss fits (the valid ones, or all of them
  with ``train_on_padding``): one rule for fine-tuning and for RL's expert frames.
* :func:`resize_views`: one resize per model tower (the VLM and the action
  expert's SigLIP take different sizes).
* :func:`row_to_sample`: a chunked row -> the `syvla.model.sample.Sample` that
  ``syvla.model.processing.build_batch`` takes (training consumes the mixture
  stream through it). The row format is this package's, so the row parser
  lives here; the Sample's own checks live on the dataclass.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from syvla import constants as K
from syvla.data import images
from syvla.data.cleaning import sort_frames
from syvla.data.columns import combine, episode_bounds, vectors
from syvla.data.schema import FRAME_SCHEMA
from syvla.model.sample import Sample

DEFAULT_CHUNK_LEN = 50  # paper App. A: action chunk 50

PREPARED_SCHEMA = FRAME_SCHEMA.append(pa.field(K.ACTIONS, pa.list_(pa.list_(pa.float32())), nullable=False)).append(
    pa.field(K.ACTION_MASK, pa.list_(pa.bool_()), nullable=False)
)


def chunk_actions(actions: np.ndarray, chunk_len: int = DEFAULT_CHUNK_LEN,
                  pad: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One episode's actions [T, A] -> chunks [T, chunk_len, A] and mask [T, chunk_len] (False on padding).

    Steps past the episode's end hold `pad` [A] (the hold-still action); None repeats the last action."""
    actions = np.asarray(actions)
    if actions.ndim != 2:
        raise ValueError(f"actions must be [frames, action_dim], got shape {actions.shape}")
    if chunk_len < 1:
        raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
    n = actions.shape[0]
    idx = np.arange(n)[:, None] + np.arange(chunk_len)[None, :]
    mask = idx < n
    if pad is None:
        return actions[np.minimum(idx, n - 1)], mask
    pad = np.asarray(pad, actions.dtype)
    if pad.shape != actions.shape[1:]:
        raise ValueError(f"pad must be one action [{actions.shape[1]}], got shape {pad.shape}")
    return np.concatenate([actions, pad[None]])[np.minimum(idx, n)], mask


def loss_mask(mask, train_on_padding: bool):
    """The chunk steps a flow-matching loss fits: `mask` (the episode's own steps), or every step with
    `train_on_padding` (the hold-still padding too: the policy learns to stop at the end). numpy or torch."""
    if not train_on_padding:
        return mask
    if isinstance(mask, np.ndarray):
        return np.ones_like(mask, dtype=bool)
    import torch

    return torch.ones_like(mask, dtype=torch.bool)


def padding_rule(dataset: str, representation: str = "native", rotation: str = "axis_angle",
                 specs: Mapping[str, Any] | None = None):
    """f(last_action) -> (pad action, rule name) for `dataset`'s chunks (syvla.data.actions.hold_still);
    `specs` ({dataset: EefSpec}) defaults to the robots this package knows."""
    from syvla.data.actions import hold_still, known_eef_specs

    spec = (known_eef_specs() if specs is None else specs).get(dataset)
    return lambda last: hold_still(last, representation, spec, rotation)


def add_chunks(table: pa.Table, chunk_len: int = DEFAULT_CHUNK_LEN, representation: str = "native",
               rotation: str = "axis_angle", specs: Mapping[str, Any] | None = None) -> pa.Table:
    """Append ACTIONS and ACTION_MASK to a frame table of whole episodes (PREPARED_SCHEMA column order).

    `representation` / `rotation` name the form the table's actions are already in and `specs`
    ({dataset: EefSpec}, default: the known robots) where their EEF pose is: together they decide
    the hold-still padding (`padding_rule`)."""
    if chunk_len < 1:
        raise ValueError(f"chunk_len must be >= 1, got {chunk_len}")
    table = sort_frames(table)
    n = table.num_rows
    kinds = combine(table.column(K.KIND)).to_numpy(zero_copy_only=False)
    frame_index = combine(table.column(K.FRAME_INDEX)).to_numpy(zero_copy_only=False)
    chunk_lens = np.zeros(n, np.int64)  # rows per frame's chunk: chunk_len for robot rows, 0 for VQA
    values, masks = [], []
    for start, stop in episode_bounds(table, K.DATASET, K.EPISODE_ID):
        if kinds[start] != K.KIND_ROBOT:
            continue
        ep = table.slice(start, stop - start)
        if not np.array_equal(frame_index[start:stop], np.arange(stop - start)):
            raise ValueError(
                f"episode {ep.column(K.DATASET)[0]}/{ep.column(K.EPISODE_ID)[0]}: frame_index must run "
                f"0..{stop - start - 1}; chunking needs whole episodes in one batch"
            )
        acts = vectors(ep, K.ACTION)
        pad, _ = padding_rule(ep.column(K.DATASET)[0].as_py(), representation, rotation, specs)(acts[-1])
        chunks, mask = chunk_actions(acts, chunk_len, pad)
        values.append(chunks.reshape(-1, chunks.shape[-1]))
        masks.append(mask.reshape(-1))
        chunk_lens[start:stop] = chunk_len
    # Inner lists: one per chunk step (action_dim values each); outer: one per frame (chunk_len steps).
    dim = values[0].shape[-1] if values else 0
    inner_values = np.concatenate(values).astype(np.float32).reshape(-1) if values else np.zeros(0, np.float32)
    inner_offsets = np.arange(int(chunk_lens.sum()) + 1, dtype=np.int32) * dim
    outer_offsets = np.concatenate([[0], np.cumsum(chunk_lens)]).astype(np.int32)
    inner = pa.ListArray.from_arrays(pa.array(inner_offsets), pa.array(inner_values, type=pa.float32()))
    actions_col = pa.ListArray.from_arrays(pa.array(outer_offsets), inner)
    mask_values = np.concatenate(masks) if masks else np.zeros(0, bool)
    mask_col = pa.ListArray.from_arrays(pa.array(outer_offsets), pa.array(mask_values, type=pa.bool_()))
    out = table.select(list(FRAME_SCHEMA.names)).append_column(PREPARED_SCHEMA.field(K.ACTIONS), actions_col)
    out = out.append_column(PREPARED_SCHEMA.field(K.ACTION_MASK), mask_col)
    return out.cast(PREPARED_SCHEMA)  # restores the schema's nullability flags lost by column replacement


# ---- images -------------------------------------------------------------------
def decode_image(data: bytes, source: str = "") -> np.ndarray:
    """Encoded PNG/JPEG bytes -> uint8 [H, W, 3] (syvla.data.images.decode; ImageError names `source`)."""
    return images.decode(data, source)


def resize_views(views: Mapping[str, np.ndarray], size: int | tuple[int, int]) -> dict[str, np.ndarray]:
    """Each view uint8 [H, W, 3] -> [h, w, 3] with (h, w) = size (an int means square), bilinear.
    Called once per model tower: the VLM and the action expert's SigLIP take different sizes."""
    out = {}
    for view, img in views.items():
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
            raise ValueError(f"view {view!r}: need uint8 [H, W, 3], got {img.dtype} {img.shape}")
        out[view] = images.resize(img, size)
    return out


# ---- model samples (syvla.model.sample.Sample) -----------------------------------
def _float_array(value: Any, field: str, ndim: int) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = [np.asarray(v, np.float32) for v in value]
        arr = np.stack(value) if value else np.zeros((0,) * ndim, np.float32)
    else:
        arr = np.asarray(value if value is not None else [], np.float32)
    if arr.size == 0:
        arr = arr.reshape((0,) * ndim)
    if arr.ndim != ndim:
        raise ValueError(f"row field {field!r}: expected {ndim}-D values, got shape {arr.shape}")
    return arr


def row_to_sample(row: Mapping[str, Any], image_size: int | tuple[int, int] | None = None) -> Sample:
    """A chunked row (PREPARED_SCHEMA; python lists or numpy values) -> a `Sample`, images decoded.

    VQA rows have empty state [0], actions [0, 0] and mask [0]. `image_size` resizes every view.
    Errors name the field (the Sample checks kind, conversation turns and chunk/mask agreement)."""
    for field in (K.DATASET, K.IMAGE_VIEWS, K.IMAGES, K.STATE, K.KIND, K.TASK):
        if field not in row:
            raise KeyError(f"row lacks field {field!r}")
    views, encoded = list(row[K.IMAGE_VIEWS]), list(row[K.IMAGES])
    if len(views) != len(encoded):
        raise ValueError(f"row fields {K.IMAGE_VIEWS!r} ({len(views)}) and {K.IMAGES!r} ({len(encoded)}) differ in length")
    if len(set(views)) != len(views):
        raise ValueError(f"row field {K.IMAGE_VIEWS!r} repeats a view: {views}")
    decoded = {}
    for view, data in zip(views, encoded):
        decoded[view] = decode_image(data, f"row field {K.IMAGES!r}, view {view!r} of "
                                           f"{row[K.DATASET]}/{row.get(K.EPISODE_ID)}")
    if image_size is not None:
        decoded = resize_views(decoded, image_size)
    conversation = row.get(K.CONVERSATION)
    if conversation is not None:
        try:
            conversation = json.loads(conversation)
        except json.JSONDecodeError as e:
            raise ValueError(f"row field {K.CONVERSATION!r} is not JSON: {e}") from e
    kind = row[K.KIND]
    if kind == K.KIND_ROBOT:
        if K.ACTIONS not in row or K.ACTION_MASK not in row:
            raise KeyError(f"robot row lacks {K.ACTIONS!r}/{K.ACTION_MASK!r}: chunk the dataset first (add_chunks)")
        actions, mask = _float_array(row[K.ACTIONS], K.ACTIONS, 2), np.asarray(row[K.ACTION_MASK], bool)
    else:
        actions, mask = np.zeros((0, 0), np.float32), np.zeros(0, bool)
    return Sample(embodiment=row[K.DATASET], images=decoded, state=_float_array(row[K.STATE], K.STATE, 1),
                  task=row[K.TASK], actions=actions, action_mask=mask, cot=row.get(K.COT), kind=kind,
                  conversation=conversation)


def batch_to_samples(batch: pa.Table | Mapping[str, Sequence], image_size=None) -> list[Sample]:
    """All rows of a pyarrow batch (or a dict of columns, e.g. Ray's numpy batch format) as `Sample`s."""
    if isinstance(batch, pa.Table):
        return [row_to_sample(r, image_size) for r in batch.to_pylist()]
    n = len(next(iter(batch.values())))
    return [row_to_sample({k: v[i] for k, v in batch.items()}, image_size) for i in range(n)]


def tensor_batch(table: pa.Table, image_size: int | tuple[int, int], views: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Chunked robot rows of one embodiment -> stacked arrays for ``iter_torch_batches``:
    ``images`` uint8 [B, V, h, w, 3], ``state`` [B, S], ``actions`` [B, chunk, A], ``action_mask`` [B, chunk]."""
    rows = table.to_pylist()
    views = list(views) if views is not None else (list(rows[0][K.IMAGE_VIEWS]) if rows else [])
    imgs, states, actions, masks = [], [], [], []
    for r in rows:
        s = row_to_sample(r, image_size)
        missing = [v for v in views if v not in s.images]
        if missing:
            raise KeyError(f"row {r[K.DATASET]}/{r[K.EPISODE_ID]} lacks view(s) {missing}")
        imgs.append(np.stack([s.images[v] for v in views]))
        states.append(s.state)
        actions.append(s.actions)
        masks.append(s.action_mask)
    return {"images": np.stack(imgs), "state": np.stack(states),
            "actions": np.stack(actions), "action_mask": np.stack(masks)}


def clean_and_chunk_table(table: pa.Table, lookup, chunk_len: int, representation: str = "native",
                          rotation: str = "axis_angle", specs=None) -> pa.Table:
    """Prepare's per-batch pass 2 over whole episodes: drop/trim per the cleaning decisions
    (syvla.data.cleaning.decision_lookup), convert the actions (syvla.data.actions.to_action_representation),
    append the chunks. Returns PREPARED_SCHEMA rows."""
    from syvla.data.actions import to_action_representation
    from syvla.data.cleaning import apply_decisions

    table = apply_decisions(table, lookup)
    if table.num_rows == 0:
        return PREPARED_SCHEMA.empty_table()
    return add_chunks(to_action_representation(table, representation, rotation, specs), chunk_len, representation,
                      rotation, specs)
