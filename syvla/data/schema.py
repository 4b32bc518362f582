"""The Arrow frame schema every reader produces (docs/architecture.md#data-contracts)."""

from __future__ import annotations

import pyarrow as pa

from syvla import constants as K

FRAME_SCHEMA = pa.schema(
    [
        pa.field(K.DATASET, pa.string(), nullable=False),
        pa.field(K.EPISODE_ID, pa.int64(), nullable=False),
        pa.field(K.FRAME_INDEX, pa.int64(), nullable=False),
        pa.field(K.TIMESTAMP, pa.float64(), nullable=False),
        pa.field(K.TASK, pa.string(), nullable=False),
        pa.field(K.COT, pa.string()),
        pa.field(K.IMAGE_VIEWS, pa.list_(pa.string()), nullable=False),
        pa.field(K.IMAGES, pa.list_(pa.binary()), nullable=False),
        pa.field(K.STATE, pa.list_(pa.float32()), nullable=False),
        pa.field(K.ACTION, pa.list_(pa.float32()), nullable=False),
        pa.field(K.SUCCESS, pa.bool_()),
        pa.field(K.KIND, pa.string(), nullable=False),
        pa.field(K.CONVERSATION, pa.string()),
    ]
)


class SchemaError(ValueError):
    """A dataset does not match the frame schema; the message names the source and field."""


def conform(table: pa.Table, source: str = "") -> pa.Table:
    """Cast `table` to FRAME_SCHEMA (column order, types); raise SchemaError naming what is wrong."""
    where = f" in {source}" if source else ""
    missing = [f.name for f in FRAME_SCHEMA if f.name not in table.column_names]
    if missing:
        raise SchemaError(f"frame table{where} lacks column(s) {missing}")
    cols = []
    for field in FRAME_SCHEMA:
        col = table.column(field.name)
        try:
            col = col.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise SchemaError(f"column {field.name!r}{where} has type {col.type}, expected {field.type}: {e}") from e
        if not field.nullable and col.null_count:
            raise SchemaError(f"column {field.name!r}{where} has {col.null_count} null value(s)")
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=FRAME_SCHEMA)
