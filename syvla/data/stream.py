"""Ray Data training stream: prepared shards -> mixture of sources -> (optionally) tensor batches.

Nothing here calls ``ray.init``: the caller (a pipeline, a test fixture, a
trainer) connects first. The per-batch work is plain functions of syvla.data
(mixture.tag_passes, chunking.tensor_batch); this module only wires them into
Ray Datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import ray

from syvla import constants as K
from syvla.data import prepared
from syvla.data.chunking import tensor_batch
from syvla.data.mixture import plan_mixture, tag_passes


def read_prepared(root: str | Path, names: Sequence[str] | None = None) -> dict[str, ray.data.Dataset]:
    """{dataset name: Ray Dataset of its prepared (cleaned, chunked) shards} under a prepare() output."""
    root = Path(root).resolve()  # Ray tasks may run in another working directory
    manifest = prepared.read_manifest(root)
    names = list(manifest.datasets) if names is None else list(names)
    return {name: ray.data.read_parquet(str(root / manifest.entry(name, root).path)) for name in names}


def source_kinds(ds: ray.data.Dataset) -> set[str]:
    """The row kinds (K.KIND_ROBOT / K.KIND_VQA) a source holds."""
    return set(ds.unique(K.KIND))


def build_mixture_dataset(
    sources: Mapping[str, ray.data.Dataset],
    weights: Mapping[str, float] | None,
    multimodal_ratio: float,
    num_samples: int,
    seed: int = 0,
    multimodal: Sequence[str] | None = None,
    shuffle: str = "global",
) -> ray.data.Dataset:
    """A Ray Dataset of `num_samples` rows mixed per syvla.data.mixture.plan_mixture (exact counts).

    multimodal: the VQA sources (default: sources whose rows are all kind ``vqa``).
    shuffle: "global" interleaves with a full random_shuffle (exact, costs an all-to-all);
    "blocks" only randomizes block order, for large data: then iterate with
    ``local_shuffle_buffer_size`` so batches mix sources. Each row gains MIXTURE_SOURCE and
    MIXTURE_PASS. Ray Train: ``TorchTrainer(..., datasets={"train": ds})`` and in each worker
    ``ray.train.get_dataset_shard("train").iter_batches(...)`` -> row_to_sample per row; the
    workers' shards are disjoint (streaming_split)."""
    if shuffle not in ("global", "blocks"):
        raise ValueError(f"shuffle must be 'global' or 'blocks', got {shuffle!r}")
    if multimodal is None:
        multimodal = []
        for name, ds in sources.items():
            kinds = source_kinds(ds)
            if len(kinds) != 1:
                raise ValueError(f"mixture source {name!r} mixes kinds {sorted(kinds)}; pass multimodal= explicitly")
            if kinds == {K.KIND_VQA}:
                multimodal.append(name)
    sizes = {name: ds.count() for name, ds in sources.items()}
    plan = plan_mixture(sizes, weights, multimodal_ratio, num_samples, seed, multimodal)
    parts = []
    for i, s in enumerate(plan.sources):
        ds = sources[s.name]
        if s.full_passes:  # every row full_passes times, in one map over the source
            parts.append(ds.map_batches(tag_passes, fn_kwargs={"source": s.name, "passes": list(range(s.full_passes))},
                                        batch_format="pyarrow"))
        if s.remainder:
            picked = (ds.random_shuffle(seed=seed + 1 + i) if shuffle == "global"
                      else ds.randomize_block_order(seed=seed + 1 + i))
            parts.append(picked.limit(s.remainder).map_batches(
                tag_passes, fn_kwargs={"source": s.name, "passes": [s.full_passes]}, batch_format="pyarrow"))
    mixed = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return mixed.random_shuffle(seed=seed) if shuffle == "global" else mixed.randomize_block_order(seed=seed)


def to_tensor_batches(ds: ray.data.Dataset, image_size: int | tuple[int, int], batch_size: int = 32,
                      views: Sequence[str] | None = None, num_tasks: int | None = None) -> ray.data.Dataset:
    """Decode + resize images and stack state/actions in Ray Data workers (one embodiment), so the
    trainer only collates: columns images [V, h, w, 3] uint8, state, actions, action_mask.
    num_tasks caps the concurrent decode tasks (leave CPUs to the trainer on small machines)."""
    compute = ray.data.TaskPoolStrategy(size=num_tasks) if num_tasks else None
    return ds.map_batches(tensor_batch, fn_kwargs={"image_size": image_size, "views": views},
                          batch_size=batch_size, batch_format="pyarrow", compute=compute)
