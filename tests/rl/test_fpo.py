import math

import pytest
import torch

from syvla.model import flow
from syvla.model.config import FlowConfig
from syvla.model.flow import cfm_losses
from syvla.rl.fpo import FPOConfig, draw_mc_pairs, fpo_loss, fpo_ratio


def test_equal_losses_give_ratio_one_and_minus_mean_advantage():
    l = torch.rand(3, 4)
    adv = torch.tensor([0.5, -0.8, 1.0])
    loss, stats = fpo_loss(l, l.clone(), adv)
    assert torch.allclose(fpo_ratio(l, l), torch.ones(3, 4))
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-7)
    assert stats["clip_fraction"].item() == 0.0
    assert stats["ratio_min"].item() == stats["ratio_max"].item() == stats["ratio_mean"].item() == 1.0


def test_hand_computed_two_samples():
    # rho = exp(l_old - l_new): sample 0: exp(0.1) = 1.1051709, exp(-0.2) = 0.8187308
    #                           sample 1: exp(0) = 1,         exp(-0.1) = 0.9048374
    # A = [1.0, -0.5], eps = 0.05:
    #   (0,0): min(1.1051709, 1.05) = 1.05        (clipped: better than old, A > 0)
    #   (0,1): min(0.8187308, 0.95) = 0.8187308   (unclipped: worse than old)
    #   (1,0): -0.5
    #   (1,1): min(-0.4524187, 0.95 * -0.5 = -0.475) = -0.475
    # loss = -(1.05 + 0.8187308 - 0.5 - 0.475) / 4 = -0.2234327
    l_old = torch.tensor([[1.0, 1.0], [0.5, 0.5]])
    l_new = torch.tensor([[0.9, 1.2], [0.5, 0.6]])
    loss, stats = fpo_loss(l_new, l_old, torch.tensor([1.0, -0.5]), clip_eps=0.05)
    assert loss.item() == pytest.approx(-0.2234327, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.75)  # 3 of 4 pairs outside [0.95, 1.05]
    assert stats["ratio_min"].item() == pytest.approx(math.exp(-0.2), rel=1e-6)
    assert stats["ratio_max"].item() == pytest.approx(math.exp(0.1), rel=1e-6)
    expected_mean = (math.exp(0.1) + math.exp(-0.2) + 1.0 + math.exp(-0.1)) / 4
    assert stats["ratio_mean"].item() == pytest.approx(expected_mean, rel=1e-6)


def test_clipping_engages_past_one_plus_minus_eps():
    adv = torch.tensor([1.0])
    l_old = torch.zeros(1, 1)
    # inside the trust region: gradient flows, d loss / d l_new = A * rho
    l_in = torch.full((1, 1), -0.04, requires_grad=True)  # rho = exp(0.04) = 1.0408 < 1.05
    fpo_loss(l_in, l_old, adv)[0].backward()
    assert l_in.grad.item() == pytest.approx(math.exp(0.04), rel=1e-5)
    # past 1 + eps with A > 0: the clipped term wins, no gradient, value pinned at (1 + eps) * A
    l_out = torch.full((1, 1), -0.2, requires_grad=True)  # rho = exp(0.2) = 1.22
    loss, stats = fpo_loss(l_out, l_old, adv)
    loss.backward()
    assert loss.item() == pytest.approx(-1.05)
    assert l_out.grad.item() == 0.0
    assert stats["clip_fraction"].item() == 1.0
    # below 1 - eps with A < 0: clipped as well
    l_low = torch.full((1, 1), 0.2, requires_grad=True)  # rho = exp(-0.2) = 0.82
    loss, _ = fpo_loss(l_low, l_old, torch.tensor([-1.0]))
    loss.backward()
    assert loss.item() == pytest.approx(0.95)
    assert l_low.grad.item() == 0.0


def test_log_ratio_is_bounded():
    rho = fpo_ratio(torch.tensor([[-10.0, 10.0]]), torch.zeros(1, 2), log_ratio_clip=3.0)
    assert torch.allclose(rho, torch.tensor([[math.exp(3.0), math.exp(-3.0)]]))


class _Linear(torch.nn.Module):
    """v = W x_t + b t: a tiny velocity model (observation conditioning omitted)."""

    def __init__(self, a_dim):
        super().__init__()
        self.w = torch.nn.Linear(a_dim, a_dim)
        self.t = torch.nn.Parameter(torch.zeros(a_dim))

    def forward(self, x, t):
        return self.w(x) + t[:, None, None] * self.t


def _mc_setup(seed=0, b=4, n=6, t_len=5, a_dim=3):
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(b, t_len, a_dim, generator=g)
    tau, eps = draw_mc_pairs(b, n, t_len, a_dim, FlowConfig(), generator=g)
    return actions, tau, eps


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gradient_step_moves_cfm_loss_against_advantage_sign(sign):
    torch.manual_seed(0)
    model = _Linear(3)
    actions, tau, eps = _mc_setup()
    with torch.no_grad():
        l_old = cfm_losses(model, actions, None, None, tau, eps)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss, _ = fpo_loss(cfm_losses(model, actions, None, None, tau, eps), l_old, torch.full((4,), sign))
    loss.backward()
    opt.step()
    with torch.no_grad():
        l_after = cfm_losses(model, actions, None, None, tau, eps)
    # A > 0 (expert, good rollout): the update lowers the CFM loss = raises the likelihood bound
    delta = (l_after - l_old).mean().item()
    assert delta < 0 if sign > 0 else delta > 0


def test_draw_mc_pairs_shapes_range_and_seed():
    cfg = FlowConfig()
    tau, eps = draw_mc_pairs(2, 16, 50, 4, cfg, generator=torch.Generator().manual_seed(3))
    assert tau.shape == (2, 16) and eps.shape == (2, 16, 50, 4)
    assert tau.dtype == eps.dtype == torch.float32
    assert (tau >= cfg.t_min).all() and (tau <= 1.0).all()
    tau2, eps2 = draw_mc_pairs(2, 16, 50, 4, cfg, generator=torch.Generator().manual_seed(3))
    assert torch.equal(tau, tau2) and torch.equal(eps, eps2)


def test_cfm_losses_match_the_formula_written_out():
    # l_i = sum_h m_h ||v(x_i, tau_i)_h - u_ih||^2 / (D * sum_h m_h), x_i = tau_i eps_i + (1 - tau_i) a, u_i = eps_i - a
    torch.manual_seed(1)
    model = _Linear(3)
    actions, tau, eps = _mc_setup(b=2, n=3, t_len=4, a_dim=3)
    step_mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    got = cfm_losses(model, actions, step_mask, None, tau, eps)
    assert got.shape == (2, 3) and got.dtype == torch.float32
    want = torch.empty(2, 3)
    for b in range(2):
        for i in range(3):
            x = tau[b, i] * eps[b, i] + (1 - tau[b, i]) * actions[b]
            u = eps[b, i] - actions[b]
            v = model(x[None], tau[b, i][None])[0]
            m = step_mask[b].float()
            want[b, i] = (m[:, None] * (v - u) ** 2).sum() / (3 * m.sum())
    assert torch.allclose(got, want, atol=1e-6)


def test_cfm_losses_zero_velocity_and_dim_mask():
    # v = 0, actions = 0, eps = 1 on dim 0 and 3 on the padded dim 1: l = 1 when dim 1 is masked out
    actions = torch.zeros(1, 2, 2)
    eps = torch.tensor([1.0, 3.0]).expand(1, 1, 2, 2).clone()
    tau = torch.full((1, 1), 0.5)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    assert cfm_losses(zero, actions, None, None, tau, eps).item() == pytest.approx(5.0)  # (1 + 9) / 2
    assert cfm_losses(zero, actions, None, torch.tensor([[True, False]]), tau, eps).item() == pytest.approx(1.0)


def test_fold_mc_matches_loop():
    torch.manual_seed(2)
    model = _Linear(3)
    actions, tau, eps = _mc_setup()
    dim_mask = torch.tensor([[True, True, False]] * 4)
    step_mask = torch.rand(4, 5) > 0.3
    loop = cfm_losses(model, actions, step_mask, dim_mask, tau, eps)
    fold = cfm_losses(model, actions, step_mask, dim_mask, tau, eps, fold_mc=True)
    assert torch.allclose(loop, fold, atol=1e-6)


def test_shape_and_config_errors():
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        fpo_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="advantages"):
        fpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="eps must be"):
        cfm_losses(lambda x, t: x, torch.zeros(2, 4, 3), None, None, torch.zeros(2, 5), torch.zeros(2, 4, 4, 3))
    with pytest.raises(ValueError, match="FPOConfig.clip_eps"):
        FPOConfig(clip_eps=1.5)
    with pytest.raises(ValueError, match="FPOConfig.n_mc"):
        FPOConfig(n_mc=0)
