"""Mixture sampling over datasets: per-dataset weights plus a multimodal (VQA) ratio.

The paper mixes multimodal data at 35% of pretraining samples and ~30% in task
fine-tuning (SyVLA App. A, "via a Batch Sampler"). A mixture of `num_samples`
draws gives the multimodal sources together `multimodal_ratio` of the stream,
split among them by weight, and the robot sources the rest, split by weight.

:func:`plan_mixture` turns that into exact per-source counts (largest-remainder
rounding, so realized shares are within 1/num_samples of the targets, not just
in expectation). A source drawn more often than it has rows is passed over
whole ``count // size`` times plus a random ``count % size`` rows, so no row
repeats before every row of its source has been seen.

The Ray stream is ``syvla.data.stream.build_mixture_dataset(sources, weights,
multimodal_ratio, num_samples, seed)``; Ray Train workers read their share with
``ray.train.get_dataset_shard(name)`` and turn rows into model samples with
``syvla.data.chunking.row_to_sample``; it tags each drawn row with
:func:`tag_passes`. :func:`sample_draws` is the same plan realized in-process
(tests, single-process consumers).
"""

from __future__ import annotations

import dataclasses
from typing import Collection, Mapping, Sequence

import numpy as np
import pyarrow as pa

PRETRAIN_MULTIMODAL_RATIO = 0.35  # SyVLA App. A: pretraining
FINETUNE_MULTIMODAL_RATIO = 0.30  # SyVLA App. A: task fine-tuning

# Columns the Ray stream adds to every row (not part of the frame schema).
MIXTURE_SOURCE = "mixture_source"  # string: which source the row was drawn from
MIXTURE_PASS = "mixture_pass"  # int64: pass over that source (0 for the first time a row is drawn)


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    name: str
    multimodal: bool
    size: int  # rows in the source
    share: float  # target share of the stream
    count: int  # draws from this source
    full_passes: int  # count // size: times every row is drawn
    remainder: int  # count % size: rows drawn once more, chosen at random


@dataclasses.dataclass(frozen=True)
class MixturePlan:
    sources: tuple[SourcePlan, ...]
    num_samples: int
    multimodal_ratio: float
    seed: int

    def shares(self) -> dict[str, float]:
        return {s.name: s.share for s in self.sources}

    def counts(self) -> dict[str, int]:
        return {s.name: s.count for s in self.sources}

    def __getitem__(self, name: str) -> SourcePlan:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"mixture has no source {name!r}; sources: {[s.name for s in self.sources]}")


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    exact = shares * total
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")  # ties go to the earlier (name-sorted) source
    counts[order[:short]] += 1
    return counts


def plan_mixture(
    sizes: Mapping[str, int],
    weights: Mapping[str, float] | None,
    multimodal_ratio: float,
    num_samples: int,
    seed: int = 0,
    multimodal: Collection[str] = (),
) -> MixturePlan:
    """Exact draw counts per source.

    sizes: rows per source. weights: relative weight per source within its group (robot or
    multimodal); None weighs sources by size. multimodal: names of the VQA sources."""
    if not sizes:
        raise ValueError("plan_mixture: sizes is empty: no sources to mix")
    if not 0.0 <= multimodal_ratio <= 1.0:
        raise ValueError(f"plan_mixture: multimodal_ratio must be in [0, 1], got {multimodal_ratio}")
    if num_samples < 1:
        raise ValueError(f"plan_mixture: num_samples must be >= 1, got {num_samples}")
    unknown = sorted(set(multimodal) - set(sizes))
    if unknown:
        raise ValueError(f"plan_mixture: multimodal names {unknown} are not sources {sorted(sizes)}")
    for name, n in sizes.items():
        if n < 1:
            raise ValueError(f"plan_mixture: source {name!r} has {n} rows; every source needs at least one")
    if weights is None:
        weights = {name: float(n) for name, n in sizes.items()}
    if set(weights) != set(sizes):
        raise ValueError(f"plan_mixture: weights name {sorted(weights)}, sources are {sorted(sizes)}")
    for name, w in weights.items():
        if not (w >= 0 and np.isfinite(w)):
            raise ValueError(f"plan_mixture: weight of {name!r} must be finite and >= 0, got {w}")

    names = sorted(sizes)
    is_mm = np.array([n in set(multimodal) for n in names])
    w = np.array([float(weights[n]) for n in names])
    shares = np.zeros(len(names))
    for group, group_share, label in ((is_mm, multimodal_ratio, "multimodal"), (~is_mm, 1 - multimodal_ratio, "robot")):
        if group_share == 0:
            continue
        total = w[group].sum()
        if not group.any() or total <= 0:
            raise ValueError(f"plan_mixture: {label} share is {group_share:g} but no {label} source has a "
                             f"positive weight (multimodal_ratio={multimodal_ratio})")
        shares[group] = group_share * w[group] / total
    counts = _largest_remainder(shares, num_samples)
    sources = tuple(
        SourcePlan(name=n, multimodal=bool(m), size=int(sizes[n]), share=float(s), count=int(c),
                   full_passes=int(c) // int(sizes[n]), remainder=int(c) % int(sizes[n]))
        for n, m, s, c in zip(names, is_mm, shares, counts)
    )
    return MixturePlan(sources=sources, num_samples=num_samples, multimodal_ratio=multimodal_ratio, seed=seed)


def sample_draws(plan: MixturePlan) -> list[tuple[str, int]]:
    """The plan realized in-process: (source, row index) per draw, interleaved in a seeded random order."""
    rng = np.random.default_rng(plan.seed)
    draws = []
    for s in plan.sources:
        rows = [np.arange(s.size)] * s.full_passes + [rng.permutation(s.size)[: s.remainder]]
        draws += [(s.name, int(i)) for i in np.concatenate(rows)]
    return [draws[i] for i in rng.permutation(len(draws))]


def tag_passes(table: pa.Table, source: str, passes: Sequence[int]) -> pa.Table:
    """The batch once per pass index, each copy tagged with its source and pass (MIXTURE_SOURCE/PASS)."""
    n = table.num_rows
    copies = [table.append_column(MIXTURE_SOURCE, pa.array([source] * n, pa.string()))
              .append_column(MIXTURE_PASS, pa.array(np.full(n, p, np.int64))) for p in passes]
    return pa.concat_tables(copies)
