"""Tiny synthetic training data and configs shared by the training tests (and their subprocess drivers)."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from syvla.data.chunking import add_chunks
from syvla.data.stats import norm_stats_exact
from syvla.data.synthetic import VIEWS, synthetic_episode
from syvla.model.config import ActionExpertConfig, EmbodimentConfig, debug_config
from syvla.train.config import ScaleConfig, preset

CHUNK = 8
EMBODIMENT = EmbodimentConfig("synthetic", state_dim=7, action_dim=4, cameras=VIEWS)


def synthetic_table(episodes: int = 4, frames: int = 20) -> pa.Table:
    """Chunked rows (the prepared-data layout) of a few synthetic episodes: 80 rows by default."""
    return add_chunks(pa.concat_tables([synthetic_episode(i, n_frames=frames) for i in range(episodes)]), CHUNK)


def tiny_config(name: str, storage: str, max_steps: int, checkpoint_every: int, workers: int = 2):
    """The debug model on the synthetic embodiment, batch 4 over `workers` ZeRO-2 workers."""
    model = debug_config(embodiments=(EMBODIMENT,), expert=ActionExpertConfig(chunk_len=CHUNK), num_query_tokens=4)
    return dataclasses.replace(preset("pretrain-debug"), name=name, storage_path=storage, model=model,
                               global_batch_size=4, max_steps=max_steps, checkpoint_every=checkpoint_every,
                               log_every=max_steps, scale=ScaleConfig(num_workers=workers, max_failures=1))


def norm_stats(table: pa.Table):
    return norm_stats_exact(table)


def vqa_rows(n: int) -> pa.Table:
    """n synthetic VQA rows in the chunked layout (empty action chunks)."""
    from syvla import constants as K
    from syvla.data.synthetic import synthetic_vqa

    schema = synthetic_table(episodes=1, frames=2).schema
    rows = pa.concat_tables([synthetic_vqa(i) for i in range(n)])
    rows = rows.append_column(K.ACTIONS, pa.array([[]] * n, schema.field(K.ACTIONS).type))
    rows = rows.append_column(K.ACTION_MASK, pa.array([[]] * n, schema.field(K.ACTION_MASK).type))
    return rows.cast(schema)


def write_prepared(root, tables: dict) -> None:
    """A prepare_data-shaped folder (syvla.data.prepared): one shard per table, manifest, statistics."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from syvla.data import prepared

    root = Path(root)
    for name, table in tables.items():
        (root / name).mkdir(parents=True)
        pq.write_table(table, root / name / prepared.shard_name(0))
    def embodiment(name, t):
        return prepared.embodiment_record(name, t, "native") if "robot" in t.column("kind").to_pylist() else None

    prepared.write_manifest(root, prepared.Manifest(chunk_len=CHUNK, datasets={
        name: prepared.DatasetEntry(path=name, source="synthetic", files=1, frames=t.num_rows,
                                    episodes=len(set(t.column("episode_id").to_pylist())), embodiment=embodiment(name, t))
        for name, t in tables.items()}))
    robot = [t for t in tables.values() if "robot" in t.column("kind").to_pylist()]
    norm_stats(pa.concat_tables(robot)).save(prepared.norm_stats_path(root))
