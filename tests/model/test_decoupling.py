import numpy as np
import torch

from syvla.model.decoupling import decoupled_states, quantile_mask
from syvla.model.processing import build_batch

from model_testlib import robot_sample


def test_mask_is_exactly_the_lowest_norms():
    norms = torch.tensor([[5.0, 0.1, 3.0, 0.5], [0.2, 9.0, 7.0, 0.05]])
    keep = quantile_mask(norms, tau=0.25)  # floor(0.25 * 8) = 2 lowest: 0.05 and 0.1
    assert keep.tolist() == [[True, False, True, True], [True, True, True, False]]
    assert quantile_mask(norms, 0.0).all()


def test_decoupled_states_zero_low_gradient_states_and_block_their_gradient():
    torch.manual_seed(0)
    h = torch.randn(2, 10, 4, requires_grad=True)
    weights = torch.linspace(0.01, 2.0, 10).view(1, 10, 1)  # state i matters ~ weights[i]

    def loss_fn(states):
        return (states * weights).sum()

    masked, keep = decoupled_states(h, loss_fn, tau=0.2)
    # gradient norm of state i is weights[i] * 2 (sqrt of 4 dims): the 4 lowest are i = 0, 1 of each row
    assert keep[:, :2].logical_not().all() and keep[:, 2:].all()
    assert torch.all(masked[:, :2] == 0)
    masked.sum().backward()
    assert torch.all(h.grad[:, :2] == 0) and torch.all(h.grad[:, 2:] == 1)


def test_pass_one_makes_no_parameter_gradients(model, cfg, norm_stats):
    rng = np.random.default_rng(1)
    batch = build_batch([robot_sample(rng), robot_sample(rng)], model.processor, cfg, norm_stats)
    model.zero_grad(set_to_none=True)
    hidden = model.vlm_hidden(batch.vlm, batch.query_mask).detach()
    states = model.query_tokens.gather(hidden, batch.query_mask, cfg.num_query_tokens)
    prefix, mask = model.expert.encode_context(batch.images, batch.view_mask, batch.state, batch.embodiment_ids)
    x = torch.zeros(2, 50, 4)
    t = torch.full((2,), 0.5)
    decoupled_states(states, lambda h: model.expert.velocity(prefix.detach(), mask, batch.embodiment_ids, x, t,
                                                             model.adapter(h)).square().mean(), tau=0.05)
    assert all(p.grad is None for p in model.parameters())


def test_tau_zero_equals_no_masking(model, cfg, norm_stats):
    import dataclasses

    from syvla.model.config import DecouplingConfig

    rng = np.random.default_rng(2)
    batch = build_batch([robot_sample(rng), robot_sample(rng)], model.processor, cfg, norm_stats)
    off = model(batch, torch.Generator().manual_seed(0), decoupling=False)
    model.cfg = dataclasses.replace(cfg, decoupling=DecouplingConfig(enabled=True, tau=0.0))
    try:
        zero = model(batch, torch.Generator().manual_seed(0))
    finally:
        model.cfg = cfg
    assert zero.masked_fraction == 0.0
    assert torch.equal(off.action_loss, zero.action_loss)
    on = model(batch, torch.Generator().manual_seed(0), decoupling=True)
    assert on.masked_fraction == 2 / 40  # floor(0.05 * 2 * 20) = 2 of 40 states
    assert not torch.equal(on.action_loss, off.action_loss)


def test_bf16_probe_masks_from_its_own_norms():
    """With a bf16 probe the mask still zeroes exactly the states whose (bf16) gradient norms are lowest."""
    torch.manual_seed(0)
    h = torch.randn(2, 10, 8)
    w = torch.randn(8, 8)
    scale = torch.linspace(0.1, 3.0, 10).view(1, 10, 1)

    def loss_fn(states):
        return ((states * scale) @ w).square().sum()

    probe = h.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (g,) = torch.autograd.grad(loss_fn(probe), probe)
    expected = quantile_mask(g.float().norm(dim=-1), 0.2)
    _, keep = decoupled_states(h, loss_fn, 0.2, torch.bfloat16)
    assert torch.equal(keep, expected) and (~keep).sum() == 4
