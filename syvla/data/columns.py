"""Fast conversions between Arrow list columns and numpy arrays, shared by cleaning,
actions, statistics and chunking. Vectors stay in Arrow's flat buffers: no Python
loop per row, which is what makes the per-batch functions cheap enough for Ray Data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def combine(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def vectors(table: pa.Table, column: str, dtype=np.float32) -> np.ndarray:
    """The list column `column` as a [rows, dim] array (a read-only view of Arrow memory when the dtype
    matches: copy before writing); raises naming the column if rows differ in length."""
    col = combine(table.column(column))
    n = len(col)
    if n == 0:
        return np.zeros((0, 0), dtype)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if col.null_count:
        raise ValueError(f"column {column!r} has {col.null_count} null row(s)")
    dim = int(lengths[0])
    if not np.all(lengths == dim):
        bad = int(np.flatnonzero(lengths != dim)[0])
        raise ValueError(f"column {column!r} is ragged: row 0 has {dim} values, row {bad} has {int(lengths[bad])}")
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype).reshape(n, dim)


def list_column(x: np.ndarray, value_type: pa.DataType = pa.float32()) -> pa.Array:
    """[rows, dim] -> list<value_type>; [rows, a, b] -> list<list<value_type>> (the ACTIONS layout)."""
    x = np.ascontiguousarray(x)
    if x.ndim < 2:
        raise ValueError(f"need at least a [rows, dim] array, got shape {x.shape}")
    values = pa.array(x.reshape(-1), type=value_type)
    for axis in range(x.ndim - 1, 0, -1):
        rows = int(np.prod(x.shape[:axis]))
        width = x.shape[axis]
        offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width, type=pa.int32())
        values = pa.ListArray.from_arrays(offsets, values)
    return values


def episode_bounds(table: pa.Table, dataset_col: str, episode_col: str) -> list[tuple[int, int]]:
    """[start, stop) row ranges of consecutive runs of the same (dataset, episode_id)."""
    n = table.num_rows
    if n == 0:
        return []
    ep = combine(table.column(episode_col)).to_numpy(zero_copy_only=False)
    ds = pc.dictionary_encode(combine(table.column(dataset_col))).indices.to_numpy(zero_copy_only=False)
    change = np.flatnonzero((ep[1:] != ep[:-1]) | (ds[1:] != ds[:-1])) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [n]])
    return list(zip(starts.tolist(), stops.tolist()))
