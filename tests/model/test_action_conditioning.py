"""Training-time action conditioning (real-time chunking without guidance): per-step flow times, a loss
that skips the clean prefix, the sampler that holds it, and a model that learns to continue a prefix."""

import dataclasses

import numpy as np
import pytest
import torch
from model_testlib import robot_sample

from syvla.model import flow
from syvla.model.config import ActionExpertConfig, FlowConfig, debug_config
from syvla.model.processing import build_batch
from syvla.sim import metaworld as mw


def _conditioned(cfg, p=1.0, max_prefix=10):
    return dataclasses.replace(cfg, expert=dataclasses.replace(cfg.expert, step_times=True),
                               flow=dataclasses.replace(cfg.flow, prefix_conditioning=p, max_prefix=max_prefix))


def test_config_needs_step_times_and_room_after_the_prefix():
    with pytest.raises(ValueError, match="prefix_conditioning > 0 needs expert.step_times"):
        debug_config(embodiments=(mw.EMBODIMENT,), flow=FlowConfig(prefix_conditioning=0.5))
    with pytest.raises(ValueError, match="max_prefix 50 must be below expert.chunk_len 50"):
        debug_config(embodiments=(mw.EMBODIMENT,), expert=ActionExpertConfig(step_times=True),
                     flow=FlowConfig(prefix_conditioning=0.5, max_prefix=50))
    with pytest.raises(ValueError, match="prefix_conditioning must be in"):
        FlowConfig(prefix_conditioning=1.5)


def test_the_loss_skips_the_prefix_and_the_field_sees_it_clean():
    torch.manual_seed(0)
    actions, eps = torch.randn(3, 8, 2), torch.randn(3, 1, 8, 2)
    tau = torch.full((3, 1), 0.7)
    seen = {}

    def velocity(x, t):
        seen["x"], seen["t"] = x, t
        return torch.zeros_like(x)

    prefix_len = torch.tensor([0, 3, 8])
    losses = flow.cfm_losses(velocity, actions, None, None, tau, eps, fold_mc=True, prefix_len=prefix_len)
    assert torch.equal(seen["t"][1], torch.tensor([0, 0, 0, 0.7, 0.7, 0.7, 0.7, 0.7]))
    assert torch.equal(seen["x"][1, :3], actions[1, :3])  # the prefix is given clean
    u = eps[:, 0] - actions  # zero velocity: the loss is the mean of u^2 over the free steps
    assert losses[0, 0] == pytest.approx(float(u[0].pow(2).mean()), rel=1e-6)
    assert losses[1, 0] == pytest.approx(float(u[1, 3:].pow(2).mean()), rel=1e-6)
    assert losses[2, 0] == 0.0  # nothing left to learn
    plain = flow.cfm_losses(velocity, actions, None, None, tau, eps, fold_mc=True)
    assert seen["t"].dim() == 1 and plain[0, 0] == losses[0, 0]


def test_the_conditioned_sampler_holds_the_prefix_and_leaves_other_rows_alone():
    torch.manual_seed(1)
    lin = torch.nn.Linear(4, 4)

    def velocity(x, t):  # depends on the per-step time, rows independent
        t = t if t.dim() == 2 else t[:, None].expand(x.shape[:2])
        return torch.tanh(lin(x)) * (1 + t.unsqueeze(-1))

    noise, target = torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    known = torch.zeros(2, 8, dtype=torch.bool)
    known[0, :3] = True
    out = flow.sample_conditioned(velocity, noise, 10, target, known)
    assert torch.equal(out[0, :3], target[0, :3]) and not torch.allclose(out[0, 3:], target[0, 3:])
    assert torch.equal(out[1], flow.sample(velocity, noise[1:], 10)[0])


def test_a_checkpoint_given_step_times_computes_what_it_did(tmp_path):
    from syvla.model.checkpoint import load_checkpoint, read_config
    from syvla.model.policy import make_debug_checkpoint
    from syvla.model.transfer import finetune_config, fresh_prefixes

    ckpt = make_debug_checkpoint(tmp_path / "c", embodiments=(mw.EMBODIMENT,))
    base_cfg = read_config(ckpt)
    cfg = finetune_config(base_cfg, [], {"expert.step_times": True, "flow.prefix_conditioning": 0.5})
    assert cfg.expert.step_times and fresh_prefixes(base_cfg, cfg) == ("expert.step_time.",)
    with pytest.raises(ValueError, match=r"--model\.expert\.step_times cannot be set"):
        finetune_config(cfg, [], {"expert.step_times": False})
    base, stats, _ = load_checkpoint(ckpt)
    grown, _, _ = load_checkpoint(ckpt, config=cfg)
    rng = np.random.default_rng(0)
    batch = build_batch([robot_sample(rng, size=64)], base.processor, base.cfg, stats, training=False)
    noise = torch.randn(1, 50, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(base.sample_actions(batch, noise=noise), grown.sample_actions(batch, noise=noise))


def test_a_conditioned_model_learns_to_continue_the_prefix(cfg, norm_stats):
    """Every sample shows the robot the same observation; only the chunk's level differs. Trained with
    clean prefixes, the model continues the level a 5-step prefix shows; without it, it cannot know it."""
    from syvla.model.syvla import SyVLA

    torch.manual_seed(0)
    cfg = _conditioned(cfg)
    model = SyVLA(cfg)
    rng = np.random.default_rng(0)
    obs = robot_sample(rng)
    levels = np.linspace(-0.8, 0.8, 8)
    samples = [dataclasses.replace(obs, actions=np.full((50, 4), c, np.float32)) for c in levels]
    batch = build_batch(samples, model.processor, cfg, norm_stats)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(250):
        out = model(batch, gen, decoupling=False)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    target = batch.actions  # normalized
    weights = flow.rtc_weights(50, 5, 5).view(1, 50, 1).expand_as(target).clone()
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        given = model.sample_actions(batch, noise=noise, guidance=(target, weights))
        blind = model.sample_actions(batch, noise=noise)
    assert torch.equal(given[:, :5], target[:, :5])
    err_given = float((given[:, 5:] - target[:, 5:]).abs().mean())
    err_blind = float((blind[:, 5:] - target[:, 5:]).abs().mean())
    assert err_given < 0.3 * err_blind, (err_given, err_blind)


def test_a_conditioned_policy_answers_prefixes_exactly_and_plain_rows_as_alone(tmp_path):
    from syvla.model.policy import Policy, make_debug_checkpoint

    cfg = _conditioned(debug_config(embodiments=(mw.EMBODIMENT,)))
    policy = Policy.load(make_debug_checkpoint(tmp_path / "c", cfg=cfg))
    rng = np.random.default_rng(0)
    obs = {"embodiment": mw.DATASET_NAME, "state": rng.normal(size=39).astype(np.float32),
           "images": {c: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for c in mw.CAMERAS},
           "instruction": "push the puck to the goal", "seed": 3}
    prefix = policy.infer({**obs, "seed": 4})["actions"][10:40]
    conditioned = {**obs, "prefix_actions": prefix, "prefix_delay": 6}
    got = policy.infer(conditioned)["actions"]
    np.testing.assert_allclose(got[:6], prefix[:6], atol=1e-5)  # given, not sampled
    assert np.abs(got[6:30] - prefix[6:]).max() > 1e-2  # the rest of the prefix is not held
    plain = {**obs, "seed": 5}
    both = policy.infer_batch([conditioned, plain])
    np.testing.assert_allclose(both[0]["actions"], got, atol=1e-5)
    np.testing.assert_allclose(both[1]["actions"], policy.infer(plain)["actions"], atol=1e-5)
