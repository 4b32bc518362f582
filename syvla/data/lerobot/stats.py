"""LeRobot meta statistics (meta/stats.json, per-episode stats): what LeRobot's own tools expect.

Per feature dimension min/max/mean/std/count, global quantiles q01..q99 from a
reservoir; images per channel in [0, 1], shaped [3, 1, 1]. These describe the
raw dataset for LeRobot tools; the training statistics are syvla.data.stats.
"""

from __future__ import annotations

import numpy as np

IMAGE_STATS_FRAMES = 20  # frames per episode and camera sampled for image statistics
QUANTILE_SAMPLE = 100_000  # rows kept (reservoir) per feature for quantile statistics


class RunningStats:
    """Running min/max/mean/std/count per feature dimension, plus a reservoir for quantiles."""

    def __init__(self, seed: int = 0):
        self.n = 0
        self.sum = self.sumsq = self.min = self.max = None
        self.sample: np.ndarray | None = None
        self.rng = np.random.default_rng(seed)

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if not len(x):
            return
        if self.sum is None:
            self.sum, self.sumsq = x.sum(0), (x * x).sum(0)
            self.min, self.max = x.min(0), x.max(0)
        else:
            self.sum += x.sum(0)
            self.sumsq += (x * x).sum(0)
            self.min, self.max = np.minimum(self.min, x.min(0)), np.maximum(self.max, x.max(0))
        # Reservoir of at most QUANTILE_SAMPLE rows: exact quantiles on small data, sampled on big.
        self.sample = x if self.sample is None else np.concatenate([self.sample, x])
        if len(self.sample) > QUANTILE_SAMPLE:
            self.sample = self.sample[self.rng.choice(len(self.sample), QUANTILE_SAMPLE, replace=False)]
        self.n += len(x)

    def to_dict(self, quantiles: bool) -> dict:
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sumsq / self.n - mean * mean, 0.0))
        out = {"min": self.min.tolist(), "max": self.max.tolist(), "mean": mean.tolist(), "std": std.tolist(), "count": [self.n]}
        if quantiles:
            for q in (1, 10, 50, 90, 99):
                out[f"q{q:02d}"] = np.quantile(self.sample, q / 100, axis=0).tolist()
        return out


def image_stats(frames: list[np.ndarray]) -> dict:
    """LeRobot's per-channel image statistics in [0, 1], shaped [3, 1, 1]."""
    x = np.stack(frames).astype(np.float64) / 255.0  # [N, H, W, 3]
    x = x.reshape(-1, x.shape[-1])
    c = lambda v: [[[float(u)]] for u in v]  # noqa: E731
    return {"min": c(x.min(0)), "max": c(x.max(0)), "mean": c(x.mean(0)), "std": c(x.std(0)), "count": [len(frames)]}


def merge_image_stats(parts: list[dict]) -> dict:
    n = np.array([p["count"][0] for p in parts], dtype=np.float64)
    arr = lambda k: np.array([np.array(p[k]).reshape(-1) for p in parts])  # noqa: E731
    mean = (arr("mean") * n[:, None]).sum(0) / n.sum()
    var = ((arr("std") ** 2 + (arr("mean") - mean) ** 2) * n[:, None]).sum(0) / n.sum()
    c = lambda v: [[[float(u)]] for u in v]  # noqa: E731
    return {"min": c(arr("min").min(0)), "max": c(arr("max").max(0)), "mean": c(mean), "std": c(np.sqrt(var)), "count": [int(n.sum())]}
