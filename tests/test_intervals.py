"""Success rates with their Wilson intervals, and paired comparisons (syvla.intervals)."""

import math

import pytest

from syvla.intervals import SuccessRate, mcnemar_exact_p, paired_comparison, success_rate, wilson_interval


@pytest.mark.parametrize("k, n, low, high", [
    (17, 20, 0.6396, 0.9476),   # worked by hand: centre 0.7936, half-width 0.1540
    (0, 10, 0.0, 0.2775),       # upper bound z^2 / (n + z^2)
    (10, 10, 0.7225, 1.0),
    (25, 50, 0.3664, 0.6336),   # symmetric about 1/2
    (1, 50, 0.0035, 0.1050),
])
def test_wilson_matches_hand_computed_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_interval_narrows_with_n_and_widens_with_confidence():
    assert wilson_interval(40, 80)[1] - wilson_interval(40, 80)[0] < wilson_interval(10, 20)[1] - wilson_interval(10, 20)[0]
    lo90, hi90 = wilson_interval(17, 20, 0.90)
    lo99, hi99 = wilson_interval(17, 20, 0.99)
    assert lo99 < lo90 and hi99 > hi90
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    for bad in [(3, 2), (-1, 5)]:
        with pytest.raises(ValueError, match="0 <= successes <= n"):
            wilson_interval(*bad)


def test_success_rate_reports_counts_and_interval():
    rate = success_rate([True] * 17 + [False] * 3)
    assert (rate.successes, rate.n, rate.rate) == (17, 20, 0.85)
    assert str(rate) == "17/20 = 85% (95% CI 64%-95%)"
    assert rate.to_dict()["low"] == pytest.approx(0.6396, abs=1e-4)
    assert str(SuccessRate(0, 0)) == "0/0 (no episodes)"


def test_paired_comparison_counts_discordant_episodes():
    before = [True] * 20 + [False] * 10
    after = [True] * 19 + [False] + [True] * 6 + [False] * 4  # 1 lost, 6 gained
    r = paired_comparison(before, after)
    assert (r["n"], r["a_only"], r["b_only"]) == (30, 1, 6)
    assert r["difference"] == pytest.approx(5 / 30)
    assert r["mcnemar_p"] == pytest.approx(2 * (1 + 7) / 2 ** 7)  # 0.125: not significant at 30 pairs
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(0, 10) == pytest.approx(2 / 1024)
    with pytest.raises(ValueError, match="same episodes"):
        paired_comparison([True], [True, False])
