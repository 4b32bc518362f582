"""Normalization statistics: recorded values, missing statistics raise, per-batch merge and Ray parity."""

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest

from syvla import constants as K
from syvla.data import stats as S
from syvla.data.columns import list_column
from syvla.data.schema import FRAME_SCHEMA
from syvla.data.synthetic import synthetic_episode, synthetic_vqa
from syvla.normalize import FeatureStats, NormStats


def _frames(dataset: str, state: np.ndarray, action: np.ndarray, episode_id: int = 0) -> pa.Table:
    n = len(state)
    return pa.Table.from_pydict(
        {K.DATASET: [dataset] * n, K.EPISODE_ID: [episode_id] * n, K.FRAME_INDEX: list(range(n)),
         K.TIMESTAMP: [0.1 * i for i in range(n)], K.TASK: ["t"] * n, K.COT: [None] * n,
         K.IMAGE_VIEWS: [[]] * n, K.IMAGES: [[]] * n, K.STATE: list_column(np.asarray(state, np.float32)),
         K.ACTION: list_column(np.asarray(action, np.float32)), K.SUCCESS: [True] * n,
         K.KIND: [K.KIND_ROBOT] * n, K.CONVERSATION: [None] * n},
        schema=FRAME_SCHEMA,
    )


def _mixed():
    eps = [synthetic_episode(i, 25 + 5 * i, dataset=d, seed=3) for i in range(4) for d in ("arm_a", "arm_b")]
    return pa.concat_tables(eps + [synthetic_vqa(50), synthetic_vqa(51)])


def test_recorded_values():
    state = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    action = np.arange(101, dtype=np.float64)[:, None]
    stats = S.norm_stats_exact(pa.concat_tables([_frames("toy", state, state[:, :1]),
                                                 _frames("line", np.zeros((101, 1)), action, 1)]))
    toy = stats["toy"].state
    np.testing.assert_allclose(toy.mean, [2.0, 10.0])
    np.testing.assert_allclose(toy.std, [np.sqrt(8 / 3), 0.0])  # population std
    np.testing.assert_allclose(toy.q01, [0.04, 10.0])
    np.testing.assert_allclose(toy.q99, [3.96, 10.0])
    assert toy.count == 3
    line = stats["line"].action
    np.testing.assert_allclose([line.mean[0], line.q01[0], line.q99[0]], [50.0, 1.0, 99.0])
    assert stats.names() == ["line", "toy"]


def test_vqa_rows_are_ignored_and_a_dataset_without_robot_frames_raises():
    t = _mixed()
    assert S.norm_stats_exact(t).names() == ["arm_a", "arm_b"]
    with pytest.raises(KeyError, match="'vqa'"):
        S.norm_stats_exact(t, datasets=["arm_a", "vqa"])
    parts = [S.partial_stats(t, S.sample_fractions({"arm_a": 1, "arm_b": 1}, 10_000))]
    with pytest.raises(KeyError, match="'vqa'"):
        S.merge_partial_stats(parts, datasets=["vqa"])


def test_missing_statistic_raises():
    stats = S.norm_stats_exact(_mixed())
    with pytest.raises(KeyError, match="no normalization statistics for dataset 'bridge'"):
        stats["bridge"]
    d = stats.to_dict()
    del d["arm_a"]["action"]["q01"]
    with pytest.raises(KeyError, match="q01"):
        NormStats.from_dict(d)
    del d["arm_b"]["state"]
    with pytest.raises(KeyError, match="'state'"):
        NormStats.from_dict({"arm_b": d["arm_b"]})
    with pytest.raises(KeyError, match="no quantile sampling fraction"):
        S.quantile_rows(_mixed(), {"arm_a": 1.0})
    with pytest.raises(ValueError, match="max_quantile_frames"):
        S.sample_fractions({"arm_a": 3}, 0)


def test_nonfinite_values_raise_naming_the_dataset():
    bad = _frames("toy", np.array([[0.0], [np.nan]]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="'toy'.*non-finite.*'state'"):
        S.norm_stats_exact(bad)
    with pytest.raises(ValueError, match="'toy'"):
        S.partial_stats(bad, {"toy": 1.0})


@pytest.mark.parametrize("batch_rows", [1, 7, 64, 10_000])
def test_partial_stats_merge_equals_exact(batch_rows):
    t = _mixed()
    exact = S.norm_stats_exact(t)
    fractions = S.sample_fractions({"arm_a": 10**6, "arm_b": 10**6}, 10**6)
    parts = [S.partial_stats(t.slice(i, batch_rows), fractions) for i in range(0, t.num_rows, batch_rows)]
    merged = S.merge_partial_stats(parts)
    _assert_equal(merged, exact, atol=1e-9)


def test_sampled_quantiles_are_deterministic_and_close():
    t = pa.concat_tables([synthetic_episode(i, 100, dataset="arm", seed=1) for i in range(20)])
    fractions = S.sample_fractions({"arm": t.num_rows}, 500)
    assert fractions["arm"] == pytest.approx(0.25)
    kept = S.quantile_rows(t, fractions, seed=5)
    assert 400 < kept.num_rows < 600
    # independent of how the rows are batched
    batched = pa.concat_tables([S.quantile_rows(t.slice(i, 333), fractions, seed=5) for i in range(0, t.num_rows, 333)])
    assert batched.equals(kept)
    assert not S.quantile_rows(t, fractions, seed=6).equals(kept)
    merged = S.merge_partial_stats([S.partial_stats(t, fractions, seed=5)])
    exact = S.norm_stats_exact(t)
    np.testing.assert_allclose(merged["arm"].state.mean, exact["arm"].state.mean, atol=1e-9)  # moments stay exact
    np.testing.assert_allclose(merged["arm"].action.q99, exact["arm"].action.q99, atol=0.1)


def _assert_equal(a: NormStats, b: NormStats, atol: float):
    assert a.names() == b.names()
    for name in a.names():
        for feature in ("state", "action"):
            fa, fb = getattr(a[name], feature), getattr(b[name], feature)
            assert isinstance(fa, FeatureStats) and fa.count == fb.count
            for field in ("mean", "std", "q01", "q99"):
                np.testing.assert_allclose(getattr(fa, field), getattr(fb, field), atol=atol, err_msg=f"{name}.{feature}.{field}")


@pytest.mark.integration
def test_ray_statistics_equal_exact_numpy(ray_local):
    from syvla.data.prepare import compute_norm_stats

    t = _mixed()
    ds = ray_local.data.from_arrow([t.slice(i, 40) for i in range(0, t.num_rows, 40)])
    exact = S.norm_stats_exact(t)
    _assert_equal(compute_norm_stats(ds), exact, atol=1e-9)
    _assert_equal(compute_norm_stats(ds, counts={"arm_a": 150, "arm_b": 150}), exact, atol=1e-9)
    sampled = compute_norm_stats(ds, max_quantile_frames=60, seed=2)
    np.testing.assert_allclose(sampled["arm_a"].action.mean, exact["arm_a"].action.mean, atol=1e-9)
    # q01 of a ~60-frame sample lies within the data's lowest 10 percent
    acts = np.stack(t.filter(pa.compute.equal(t.column(K.DATASET), "arm_a")).column(K.ACTION).to_pylist())
    assert np.all(sampled["arm_a"].action.q01 >= acts.min(0)) and np.all(sampled["arm_a"].action.q01 <= np.quantile(acts, 0.1, 0))
    with pytest.raises(KeyError, match="'vqa'"):
        compute_norm_stats(ds, datasets=["arm_a", "vqa"])
