"""The PPO learner end to end on the real debug model: ratio, behaviour weights, decoupling, expert likelihood."""

import numpy as np
import pytest
import torch
from rl_testlib import model_samples, policy_batch

from syvla.model.checkpoint import read_policy_version
from syvla.rl.config import debug_rl_config
from syvla.rl.fpo import FPOConfig
from syvla.rl.learner import LearnerGroup, PolicyLearner


def _cfg(**kw):
    base = dict(update_steps=2, minibatch_size=4, fpo=FPOConfig(n_mc=2), lr=1e-3)
    return debug_rl_config(**{**base, **kw})


def test_ratio_is_one_while_weights_equal_the_behaviour_weights(rl_ckpts):
    cfg = _cfg()
    learner = PolicyLearner(rl_ckpts[0], cfg)
    batch = policy_batch(cfg, learner.model.cfg, model_samples(6, seed=1), np.linspace(-0.8, 0.8, 6),
                         experts=model_samples(2, seed=2))
    assert batch.summary()["expert_rows"] == 2 and batch.advantages[-2:].tolist() == [1.0, 1.0]
    stats = learner.update(batch)
    # step 1 runs on the behaviour weights (decoupling on, mask stored with the pairs): rho = 1 exactly
    assert stats["ratio_min_first_step"] == pytest.approx(1.0, abs=1e-5)
    assert stats["ratio_max_first_step"] == pytest.approx(1.0, abs=1e-5)
    # step 2 runs on updated weights
    assert stats["ratio_max"] - stats["ratio_min"] > 1e-4
    assert np.isfinite(stats["policy_loss"]) and stats["grad_norm"] > 0


def test_stale_rollouts_are_scored_by_their_own_version(rl_ckpts):
    cfg = _cfg(update_steps=1, minibatch_size=4)
    learner = PolicyLearner(rl_ckpts[1], cfg)  # current weights: version 1
    learner.add_version(0, rl_ckpts[0])  # kept weights of version 0
    rollout = model_samples(4, seed=3)
    stale = learner.update(policy_batch(cfg, learner.model.cfg, rollout, np.zeros(4), version=1, rollout_version=0))
    assert abs(stale["ratio_max_first_step"] - 1) > 1e-3 or abs(stale["ratio_min_first_step"] - 1) > 1e-3
    with pytest.raises(KeyError, match="no weights of policy version 7"):
        learner.update(policy_batch(cfg, learner.model.cfg, rollout, np.zeros(4), version=1, rollout_version=7))


def test_decoupling_switch_masks_feature_query_states(rl_ckpts):
    on = PolicyLearner(rl_ckpts[0], _cfg())
    batch = policy_batch(on.cfg, on.model.cfg, model_samples(4, seed=4), np.zeros(4))
    l_on, keep = on.behaviour_losses(batch)
    n_states = keep.numel()  # B x num_query_tokens
    assert (~keep).sum().item() == int(on.model.cfg.decoupling.tau * n_states) > 0
    off = PolicyLearner(rl_ckpts[0], _cfg(ablate_decoupling=True))  # ablation "w/o Intention Decoupling"
    l_off, keep_off = off.behaviour_losses(batch)
    assert keep_off is None and l_off.shape == l_on.shape == (4, 2)
    assert not torch.allclose(l_on, l_off)


def test_expert_frames_with_advantage_one_become_likelier(rl_ckpts):
    """A = 1.0 on expert frames: the update lowers their CFM loss on the stored pairs (§3.3)."""
    cfg = _cfg(update_steps=3, minibatch_size=3, fpo=FPOConfig(n_mc=2, clip_eps=0.2))
    learner = PolicyLearner(rl_ckpts[0], cfg)
    experts = model_samples(3, seed=5)
    batch = policy_batch(cfg, learner.model.cfg, [], [], experts=experts)
    before, _ = learner.behaviour_losses(batch)
    learner.update(batch)
    after, _ = learner.behaviour_losses(batch)  # version 0 is still the learner's (updated, unsaved) weights
    assert after.mean() < before.mean()


def test_group_saves_a_new_version_and_reloads(rl_ckpts, tmp_path):
    cfg = _cfg(update_steps=1)
    group = LearnerGroup([PolicyLearner(rl_ckpts[0], cfg)])
    group.update(policy_batch(cfg, group.learners[0].model.cfg, model_samples(2, seed=6), [0.5, -0.5]))
    out = group.save(str(tmp_path / "v1"), 1)
    assert read_policy_version(out) == 1 and group.learners[0].version == 1
    checksum = group.checksums()[0]
    fresh = LearnerGroup([PolicyLearner(rl_ckpts[0], cfg)])
    assert fresh.checksums()[0] != checksum
    assert fresh.load(out) == 1 and fresh.checksums()[0] == pytest.approx(checksum, rel=1e-12)
