"""Success rates as evidence: counts with their 95% Wilson interval, and paired comparisons.

    rate = success_rate([True, False, True, ...])       # SuccessRate(successes, n): .low, .high, str()
    str(rate)                                           # '17/20 = 85% (95% CI 64-95%)'
    paired_comparison(before, after)                    # the same layouts and noise, episode by episode

Closed-loop success over n episodes is a binomial count; the Wilson score interval keeps its
coverage near the nominal level at the small n and extreme rates robot evaluations have (a
normal-approximation interval collapses to a point at 0/n and n/n). Two checkpoints run on the same
layouts with the same flow noise are compared pair by pair: only the discordant episodes (one
succeeds, the other fails) carry information about the difference, and the exact McNemar test
asks whether their split could be a fair coin's.

Standard library only: every layer (simulation, serving's blind evaluation, RL, reports) uses it.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import Sequence


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion `successes / n` (nan, nan when n = 0)."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    z = _z(confidence)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # Exact at the ends: 0/n has lower bound 0, n/n upper bound 1 (the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclasses.dataclass(frozen=True)
class SuccessRate:
    """`successes` of `n` episodes, with the Wilson interval at `confidence`."""

    successes: int
    n: int
    confidence: float = 0.95

    def __post_init__(self):
        wilson_interval(self.successes, self.n, self.confidence)  # validates

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n, self.confidence)

    @property
    def low(self) -> float:
        return self.interval[0]

    @property
    def high(self) -> float:
        return self.interval[1]

    def to_dict(self) -> dict:
        return {"successes": self.successes, "n": self.n, "rate": self.rate, "low": self.low, "high": self.high,
                "confidence": self.confidence}

    @classmethod
    def from_dict(cls, d: dict) -> "SuccessRate":
        """The inverse of to_dict (the derived rate and bounds are recomputed, not trusted)."""
        return cls(int(d["successes"]), int(d["n"]), float(d.get("confidence", 0.95)))

    def __str__(self) -> str:
        if not self.n:
            return "0/0 (no episodes)"
        return (f"{self.successes}/{self.n} = {self.rate:.0%} ({self.confidence:.0%} CI "
                f"{self.low:.0%}-{self.high:.0%})")


def success_rate(outcomes: Sequence[bool], confidence: float = 0.95) -> SuccessRate:
    return SuccessRate(sum(bool(o) for o in outcomes), len(outcomes), confidence)


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: P(a split of the discordant pairs at least this uneven | p = 1/2)."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only}, {b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def paired_comparison(a: Sequence[bool], b: Sequence[bool], confidence: float = 0.95) -> dict:
    """`a` and `b`: outcomes of the same episodes (same layouts, same noise), in the same order.

    Returns both rates with their intervals, the difference b - a, the discordant counts and the
    exact McNemar p-value of "no difference".
    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same episodes: {len(a)} vs {len(b)}")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    ra, rb = success_rate(a, confidence), success_rate(b, confidence)
    return {"n": len(a), "a": ra.to_dict(), "b": rb.to_dict(), "difference": rb.rate - ra.rate,
            "a_only": a_only, "b_only": b_only, "mcnemar_p": mcnemar_exact_p(a_only, b_only)}
