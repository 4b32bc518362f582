import math

import numpy as np
import pytest
import torch

from syvla.rl.advantages import (AdvantageConfig, batch_advantages, clip_advantages, gae, monte_carlo_returns,
                                 trajectory_advantages)


def test_gae_terminal_hand_computed():
    # 3 steps, success reward at the end, episode ended (V(s_3) = 0); gamma 0.9, lam 0.8 -> gamma*lam 0.72
    # delta_2 = 1 + 0.9*0     - 0.7 = 0.3
    # delta_1 = 0 + 0.9*0.7   - 0.6 = 0.03
    # delta_0 = 0 + 0.9*0.6   - 0.5 = 0.04
    # A_2 = 0.3 ; A_1 = 0.03 + 0.72*0.3 = 0.246 ; A_0 = 0.04 + 0.72*0.246 = 0.21712
    adv, ret = gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=0.9, lam=0.8)
    np.testing.assert_allclose(adv, [0.21712, 0.246, 0.3], rtol=1e-6)
    np.testing.assert_allclose(ret, [0.71712, 0.846, 1.0], rtol=1e-6)  # A + V
    assert adv.dtype == np.float32 and ret.dtype == np.float32


def test_gae_truncated_bootstraps():
    # same trajectory, cut before the end: V(s_3) = 0.9 and no reward yet
    # delta_2 = 0 + 0.9*0.9 - 0.7 = 0.11 ; A_2 = 0.11
    # A_1 = 0.03 + 0.72*0.11 = 0.1092 ; A_0 = 0.04 + 0.72*0.1092 = 0.118624
    adv, _ = gae([0.0, 0.0, 0.0], [0.5, 0.6, 0.7], gamma=0.9, lam=0.8, bootstrap_value=0.9)
    np.testing.assert_allclose(adv, [0.118624, 0.1092, 0.11], rtol=1e-6)


def test_failed_episode_gets_negative_advantages():
    # failure: reward 0 at the end; gamma 1, lam 1 -> A_t = 0 - V(s_t)
    adv, ret = gae([0.0, 0.0], [0.4, 0.6], gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv, [-0.4, -0.6], rtol=1e-6)
    np.testing.assert_allclose(ret, [0.0, 0.0], atol=1e-7)


def test_gae_lambda_one_equals_monte_carlo_minus_value():
    rng = np.random.default_rng(0)
    r = (rng.random(7) > 0.7).astype(np.float64)
    v = rng.random(7)
    adv, ret = gae(r, v, gamma=0.95, lam=1.0)
    mc = monte_carlo_returns(r, gamma=0.95)
    np.testing.assert_allclose(adv, mc - v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, mc, rtol=1e-5, atol=1e-6)


def test_gae_lambda_zero_is_one_step_td():
    adv, _ = gae([0.0, 1.0], [0.2, 0.5], gamma=0.9, lam=0.0)
    np.testing.assert_allclose(adv, [0.9 * 0.5 - 0.2, 1.0 - 0.5], rtol=1e-6)


def test_monte_carlo_returns_hand_computed():
    np.testing.assert_allclose(monte_carlo_returns([0, 0, 1], gamma=0.9), [0.81, 0.9, 1.0], rtol=1e-6)
    np.testing.assert_allclose(monte_carlo_returns([0, 0, 0], gamma=0.9), [0, 0, 0])
    # bootstrap: R_2 = 0 + 0.5*2 = 1, R_1 = 0.5, R_0 = 0.25
    np.testing.assert_allclose(monte_carlo_returns([0, 0, 0], gamma=0.5, bootstrap_value=2.0), [0.25, 0.5, 1.0])


def test_trajectory_advantages_clips_policy_advantage_not_value_target():
    cfg = AdvantageConfig(gamma=1.0, lam=1.0)  # clip 0.8 by default
    adv, ret = trajectory_advantages([0.0, 1.0], [0.0, -0.5], cfg)
    # unclipped A = [1 - 0, 1 + 0.5] = [1.0, 1.5] -> clipped to 0.8; targets stay 1, 1
    np.testing.assert_allclose(adv, [0.8, 0.8])
    np.testing.assert_allclose(ret, [1.0, 1.0])
    np.testing.assert_allclose(clip_advantages([-2.0, 0.1, 3.0]), [-0.8, 0.1, 0.8])
    np.testing.assert_allclose(clip_advantages([-2.0, 3.0], 0.5), [-0.5, 0.5])


def test_batch_advantages_fixes_expert_to_one_without_renormalizing():
    cfg = AdvantageConfig()
    gae_adv = np.array([0.3, -0.8, np.nan, np.nan], dtype=np.float32)
    is_expert = np.array([False, False, True, True])
    out = batch_advantages(gae_adv, is_expert, cfg)
    np.testing.assert_array_equal(out, np.array([0.3, -0.8, 1.0, 1.0], dtype=np.float32))
    # torch inputs work the same
    out_t = batch_advantages(torch.tensor(gae_adv), torch.tensor(is_expert), cfg)
    np.testing.assert_array_equal(out_t, out)


def test_batch_advantages_standard_gae_ablation():
    cfg = AdvantageConfig(expert_gae=True)
    out = batch_advantages([0.3, -0.5], [False, True], cfg)
    np.testing.assert_allclose(out, [0.3, -0.5])
    with pytest.raises(ValueError, match="expert_gae=True"):
        batch_advantages([0.3, np.nan], [False, True], cfg)


@pytest.mark.parametrize("field,value", [("gamma", 1.5), ("lam", -0.1), ("clip", 0.0),
                                         ("expert_advantage", math.nan)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"AdvantageConfig.{field}"):
        AdvantageConfig(**{field: value})


def test_shape_errors():
    with pytest.raises(ValueError, match="same length"):
        gae([0.0, 1.0], [0.1], gamma=0.9, lam=0.9)
    with pytest.raises(ValueError, match=r"\[B\]"):
        batch_advantages([0.1, 0.2], [True], AdvantageConfig())
