import torch

from syvla.model import flow
from syvla.model.config import FlowConfig


def test_interpolation_endpoints_and_velocity():
    a, eps = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    assert torch.allclose(flow.interpolate(a, eps, torch.ones(3)), eps)  # t = 1 is noise
    assert torch.allclose(flow.interpolate(a, eps, torch.zeros(3)), a)  # t = 0 is data
    t = torch.tensor([0.2, 0.5, 0.9])
    dt = 1e-3
    fd = (flow.interpolate(a, eps, t + dt) - flow.interpolate(a, eps, t)) / dt
    assert torch.allclose(fd, flow.target_velocity(a, eps), atol=1e-3)


def test_euler_sampler_recovers_data_under_exact_field():
    a = torch.randn(2, 4, 3)
    # On the straight path the exact field is (x - a) / t; Euler follows a straight line exactly.
    x = flow.sample(lambda x, t: (x - a) / t.view(-1, 1, 1), torch.randn(2, 4, 3), num_steps=10)
    assert torch.allclose(x, a, atol=1e-5)


def test_masked_loss_ignores_padding_steps_and_dims():
    v, u = torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)
    u[0, 0, 0] = 2.0  # valid: counts
    u[0, 2, :] = 100.0  # padded step
    u[0, :, 1] = 50.0  # padded dim
    step = torch.tensor([[True, True, False]])
    dim = torch.tensor([[True, False]])
    assert flow.per_sample_loss(v, u, step, dim).item() == 4.0 / 2  # one error of 2^2 over 2 valid cells
    w = torch.tensor([0.0])
    assert flow.loss(v, u, step, dim, sample_weight=w).item() == 0.0


def test_time_sampling_is_seeded_and_in_range():
    cfg = FlowConfig()
    t1 = flow.sample_time(1000, cfg, torch.Generator().manual_seed(3))
    t2 = flow.sample_time(1000, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2)
    assert t1.min() >= cfg.t_min and t1.max() <= 1.0
    # Beta(1.5, 1) has mean a / (a + 1) = 0.6
    assert abs(t1.mean().item() - 0.6) < 0.03
