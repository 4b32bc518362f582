"""Per-dataset normalization statistics: computed by the data pipeline, carried by
every checkpoint, applied by the one batch builder that training, serving and RL
share. A missing statistic is an error, never a pass-through."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from syvla import constants as K

NORM_STATS_FILE = "norm_stats.json"  # the name of a saved NormStats in a checkpoint and in a prepared data folder

_FIELDS = (K.STAT_MEAN, K.STAT_STD, K.STAT_Q01, K.STAT_Q99)
_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Statistics of one vector feature (state or action) of one dataset."""

    mean: np.ndarray  # [dim]
    std: np.ndarray  # [dim]
    q01: np.ndarray  # [dim]
    q99: np.ndarray  # [dim]
    count: int = 0  # frames the statistics were computed over

    def __post_init__(self):
        dims = {name: np.asarray(getattr(self, name)).shape for name in _FIELDS}
        if len(set(dims.values())) != 1 or len(next(iter(dims.values()))) != 1:
            raise ValueError(f"FeatureStats fields must be 1-D of equal length, got shapes {dims}")
        for name in _FIELDS:
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"FeatureStats.{name} has non-finite values: {arr.tolist()}")
            object.__setattr__(self, name, arr)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_array(cls, x: np.ndarray) -> "FeatureStats":
        """Exact statistics of x [frames, dim]."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"need a non-empty [frames, dim] array, got shape {x.shape}")
        q01, q99 = np.quantile(x, [0.01, 0.99], axis=0)
        return cls(x.mean(0), x.std(0), q01, q99, count=int(x.shape[0]))

    def to_dict(self) -> dict:
        out = {name: getattr(self, name).tolist() for name in _FIELDS}
        out[K.STAT_COUNT] = int(self.count)
        return out

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> "FeatureStats":
        missing = [name for name in _FIELDS if name not in d]
        if missing:
            raise KeyError(f"normalization statistics {where} lack {missing}")
        return cls(*(np.asarray(d[name], dtype=np.float64) for name in _FIELDS), count=int(d.get(K.STAT_COUNT, 0)))

    # Mean/std normalization (the paper's App. A: "normalize ... using dataset mean and variance").
    def normalize(self, x: np.ndarray) -> np.ndarray:
        self._check_dim(x)
        return ((x - self.mean) / (self.std + _EPS)).astype(np.float32)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        self._check_dim(x)
        return (x * (self.std + _EPS) + self.mean).astype(np.float32)

    def _check_dim(self, x: np.ndarray) -> None:
        if np.shape(x)[-1] != self.dim:
            raise ValueError(f"last dimension {np.shape(x)[-1]} does not match statistics dim {self.dim}")


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    state: FeatureStats
    action: FeatureStats


class NormStats:
    """Statistics for every dataset (embodiment) a policy knows, keyed by name."""

    def __init__(self, per_dataset: dict[str, DatasetStats]):
        self._per_dataset = dict(per_dataset)

    def __contains__(self, name: str) -> bool:
        return name in self._per_dataset

    def __getitem__(self, name: str) -> DatasetStats:
        if name not in self._per_dataset:
            raise KeyError(
                f"no normalization statistics for dataset {name!r}; known: {sorted(self._per_dataset)}"
            )
        return self._per_dataset[name]

    def names(self) -> list[str]:
        return sorted(self._per_dataset)

    def merged(self, other: "NormStats") -> "NormStats":
        return NormStats({**self._per_dataset, **other._per_dataset})

    def to_dict(self) -> dict:
        return {
            name: {K.STATE: s.state.to_dict(), K.ACTION: s.action.to_dict()}
            for name, s in sorted(self._per_dataset.items())
        }

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        out = {}
        for name, entry in d.items():
            for feature in (K.STATE, K.ACTION):
                if feature not in entry:
                    raise KeyError(f"normalization statistics for dataset {name!r} lack {feature!r}")
            out[name] = DatasetStats(
                state=FeatureStats.from_dict(entry[K.STATE], f"{name}.{K.STATE}"),
                action=FeatureStats.from_dict(entry[K.ACTION], f"{name}.{K.ACTION}"),
            )
        return cls(out)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "NormStats":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"normalization statistics file missing: {path}")
        return cls.from_dict(json.loads(path.read_text()))


def merge_moments(parts: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[int, np.ndarray, np.ndarray]:
    """Combine (count, mean, M2) partial moments (Chan et al.) into one; M2 = sum of squared deviations."""
    n, mean, m2 = 0, None, None
    for nb, mb, m2b in parts:
        if nb == 0:
            continue
        if n == 0:
            n, mean, m2 = nb, np.asarray(mb, np.float64), np.asarray(m2b, np.float64)
            continue
        delta = mb - mean
        tot = n + nb
        mean = mean + delta * nb / tot
        m2 = m2 + m2b + delta**2 * n * nb / tot
        n = tot
    if n == 0:
        raise ValueError("no frames to compute statistics from")
    return n, mean, m2

