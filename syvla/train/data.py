"""The training stream: prepared shards -> task filter -> mixture -> Ray Dataset for the Train workers.

Ray Data code (the callers connect to Ray first); the filters are plain pyarrow.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from syvla import constants as K
from syvla.sim.metaworld import task_texts
from syvla.train.config import DataConfig


def filter_tasks_table(table: pa.Table, texts: Sequence[str]) -> pa.Table:
    """Rows whose task text is one of `texts` (VQA rows are kept: they are not task-specific)."""
    keep = pc.or_(pc.is_in(table.column(K.TASK), value_set=pa.array(list(texts), pa.string())),
                  pc.equal(table.column(K.KIND), K.KIND_VQA))
    return table.filter(keep)


def drop_cot_table(table: pa.Table) -> pa.Table:
    """The same rows without chain-of-thought text (DataConfig.cot false: the ablation 'w/o CoT')."""
    i = table.schema.get_field_index(K.COT)
    return table.set_column(i, table.schema.field(i), pa.nulls(table.num_rows, table.schema.field(i).type))


def training_dataset(cfg: DataConfig, seed: int = 0, epoch_samples: int | None = None):
    """(Ray Dataset of one epoch of the mixture stream, {source: rows}) for `ray.train` workers.

    Every prepared dataset under cfg.path takes part; robot rows are filtered to cfg.tasks.
    Sources whose rows are all VQA are the multimodal ones and get cfg.multimodal_ratio of
    the stream; a positive ratio without any VQA source is an error (no silent fallback).
    One epoch draws `epoch_samples` rows (default: every robot row once, plus the VQA share).
    """
    from syvla.data.stream import build_mixture_dataset, read_prepared, source_kinds

    sources = read_prepared(cfg.path)
    if cfg.tasks:
        texts = task_texts(cfg.tasks)
        sources = {name: ds.map_batches(filter_tasks_table, fn_kwargs={"texts": texts}, batch_format="pyarrow")
                   for name, ds in sources.items()}
    if not cfg.cot:
        sources = {name: ds.map_batches(drop_cot_table, batch_format="pyarrow") for name, ds in sources.items()}
    sources = {name: ds.materialize() for name, ds in sources.items()}
    sizes = {name: ds.count() for name, ds in sources.items()}
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        hint = f" after keeping tasks {list(cfg.tasks)}" if cfg.tasks else ""
        raise ValueError(f"prepared dataset(s) {empty} under {cfg.path} have no rows{hint}")
    multimodal = [name for name, ds in sources.items() if source_kinds(ds) == {K.KIND_VQA}]
    if cfg.multimodal_ratio > 0 and not multimodal:
        raise ValueError(f"data.multimodal_ratio is {cfg.multimodal_ratio} but {cfg.path} holds no multimodal "
                         "(VQA) dataset: prepare one (LLaVA JSON input) or pass --data.multimodal_ratio 0")
    robot_rows = sum(n for name, n in sizes.items() if name not in multimodal)
    if epoch_samples is None:
        epoch_samples = int(round(robot_rows / (1.0 - cfg.multimodal_ratio)))
    ds = build_mixture_dataset(sources, None, cfg.multimodal_ratio, epoch_samples, seed=cfg.shuffle_seed + seed,
                               multimodal=multimodal)
    return ds, sizes
