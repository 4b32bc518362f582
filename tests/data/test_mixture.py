"""Mixture sampling: exact plans, realized proportions over 10k samples, disjoint per-worker shards."""

import collections
import threading

import numpy as np
import pyarrow as pa
import pytest

from syvla import constants as K
from syvla.data import mixture as M

SIZES = {"arm_a": 1000, "arm_b": 5000, "vqa": 1500}
WEIGHTS = {"arm_a": 1.0, "arm_b": 3.0, "vqa": 1.0}
TARGET = {"arm_a": 0.65 * 0.25, "arm_b": 0.65 * 0.75, "vqa": 0.35}


def test_plan_recorded_counts_and_passes():
    plan = M.plan_mixture(SIZES, WEIGHTS, M.PRETRAIN_MULTIMODAL_RATIO, 10_000, seed=0, multimodal=["vqa"])
    assert plan.counts() == {"arm_a": 1625, "arm_b": 4875, "vqa": 3500}
    for name, share in TARGET.items():
        assert plan.shares()[name] == pytest.approx(share)
    assert (plan["arm_a"].full_passes, plan["arm_a"].remainder) == (1, 625)
    assert (plan["arm_b"].full_passes, plan["arm_b"].remainder) == (0, 4875)
    assert (plan["vqa"].full_passes, plan["vqa"].remainder) == (2, 500)
    assert plan["vqa"].multimodal and not plan["arm_a"].multimodal


def test_plan_counts_sum_exactly_and_track_shares():
    for n in (1, 7, 999, 10_001):
        plan = M.plan_mixture({"a": 3, "b": 5, "c": 11}, {"a": 1, "b": 1, "c": 2}, 0.3, n, multimodal=["c"])
        assert sum(plan.counts().values()) == n
        for s in plan.sources:
            assert abs(s.count - s.share * n) < 1.0


def test_plan_weights_none_means_size_proportional_within_group():
    plan = M.plan_mixture({"a": 100, "b": 300, "v": 10}, None, 0.5, 1000, multimodal=["v"])
    assert plan.counts() == {"a": 125, "b": 375, "v": 500}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"multimodal_ratio": 0.3, "multimodal": []}, "no multimodal source"),
        ({"multimodal_ratio": 1.2}, "multimodal_ratio"),
        ({"num_samples": 0}, "num_samples"),
        ({"weights": {"arm_a": 1.0}}, "weights name"),
        ({"weights": {"arm_a": -1.0, "arm_b": 1.0, "vqa": 1.0}}, "weight of 'arm_a'"),
        ({"multimodal": ["coco"]}, "not sources"),
        ({"weights": {"arm_a": 0.0, "arm_b": 0.0, "vqa": 1.0}}, "no robot source has a positive weight"),
    ],
)
def test_plan_rejects_bad_arguments(kwargs, match):
    args = {"sizes": SIZES, "weights": WEIGHTS, "multimodal_ratio": 0.35, "num_samples": 100, "multimodal": ["vqa"]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        M.plan_mixture(**args)


def test_sample_draws_realize_the_plan_without_early_repeats():
    plan = M.plan_mixture(SIZES, WEIGHTS, 0.35, 10_000, seed=3, multimodal=["vqa"])
    draws = M.sample_draws(plan)
    assert len(draws) == 10_000 and draws == M.sample_draws(plan)
    counts = collections.Counter(s for s, _ in draws)
    assert dict(counts) == plan.counts()
    per_row = collections.Counter(draws)
    assert max(per_row[("arm_b", i)] for i in range(5000)) == 1  # fewer draws than rows: no repeats
    assert set(per_row[("vqa", i)] for i in range(1500)) <= {2, 3}  # two full passes, then 500 more rows
    # interleaved: the first 1000 draws already hold every source near its share
    head = collections.Counter(s for s, _ in draws[:1000])
    assert all(abs(head[n] / 1000 - TARGET[n]) < 0.05 for n in TARGET)


def _source(ray, name: str, size: int, kind: str):
    t = pa.table({K.DATASET: [name] * size, K.KIND: [kind] * size, "uid": np.arange(size, dtype=np.int64)})
    return ray.data.from_arrow([t.slice(i, 250) for i in range(0, size, 250)])


@pytest.mark.integration
@pytest.mark.slow
def test_ray_mixture_proportions_and_disjoint_worker_shards(ray_local):
    from syvla.data.stream import build_mixture_dataset

    sources = {n: _source(ray_local, n, size, K.KIND_VQA if n == "vqa" else K.KIND_ROBOT) for n, size in SIZES.items()}
    ds = build_mixture_dataset(sources, WEIGHTS, M.PRETRAIN_MULTIMODAL_RATIO, 10_000, seed=0).materialize()
    rows = ds.select_columns([M.MIXTURE_SOURCE, "uid", M.MIXTURE_PASS, K.KIND]).to_pandas()
    assert len(rows) == 10_000
    realized = rows[M.MIXTURE_SOURCE].value_counts(normalize=True).to_dict()
    for name, share in TARGET.items():
        assert abs(realized[name] - share) <= 0.02, (name, realized[name], share)
    assert abs((rows[K.KIND] == K.KIND_VQA).mean() - 0.35) <= 0.02
    # each draw is one (source, row, pass): never drawn twice
    assert not rows.duplicated([M.MIXTURE_SOURCE, "uid", M.MIXTURE_PASS]).any()
    # shuffled: the first 2000 rows are not one source's block
    head = rows[M.MIXTURE_SOURCE].iloc[:2000].value_counts(normalize=True)
    assert all(abs(head[n] - TARGET[n]) < 0.05 for n in TARGET)

    # What Ray Train's get_dataset_shard gives each worker: a streaming_split shard.
    shards = ds.streaming_split(2, equal=True)
    seen = [[], []]

    def consume(k):
        for batch in shards[k].iter_batches(batch_size=500, batch_format="pandas"):
            seen[k] += list(zip(batch[M.MIXTURE_SOURCE], batch["uid"], batch[M.MIXTURE_PASS]))

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) == len(seen[1]) == 5000
    assert set(seen[0]) | set(seen[1]) == set(zip(rows[M.MIXTURE_SOURCE], rows["uid"], rows[M.MIXTURE_PASS]))
