import numpy as np
import pytest
import torch

from syvla.model.config import debug_config
from syvla.normalize import DatasetStats, FeatureStats, NormStats
from syvla.sim import metaworld as mw


@pytest.fixture(scope="session")
def cfg():
    return debug_config(embodiments=(mw.EMBODIMENT,))


@pytest.fixture(scope="session")
def model(cfg):
    from syvla.model.syvla import SyVLA

    torch.manual_seed(0)
    return SyVLA(cfg)


@pytest.fixture(scope="session")
def norm_stats():
    rng = np.random.default_rng(0)
    return NormStats({"metaworld": DatasetStats(
        FeatureStats.from_array(rng.normal(2.0, 3.0, size=(200, 39))),
        FeatureStats.from_array(rng.normal(0.0, 0.5, size=(200, 4))))})
