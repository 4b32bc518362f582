"""Flow matching, shared by training, serving and RL.

Time convention (stated once, used everywhere): t = 1 is pure noise, t = 0 is
the data. For an action chunk a and noise eps:
    x_t = t * eps + (1 - t) * a        (interpolation)
    u   = eps - a                      (target velocity, dx_t/dt)
Sampling integrates dx/dt = v(x_t, t) from t = 1 down to t = 0 with Euler steps.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from syvla.model.config import FlowConfig

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B,T,A], t [B] or [B,T]) -> v [B,T,A]


def sample_time(batch: int, cfg: FlowConfig, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """t ~ Beta(a, 1) on [t_min, 1], drawn by inverse CDF (t = u^(1/a)) so a generator seeds it: [batch].

    a > 1 puts more weight on noisier times, where the velocity field is hardest to learn.
    """
    u = torch.rand(batch, generator=generator)
    t = u ** (1.0 / cfg.time_power)
    return (cfg.t_min + (1.0 - cfg.t_min) * t).to(device=device, dtype=torch.float32)


def interpolate(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t * eps + (1 - t) * a. actions, noise: [B, T, A]; t: [B], or [B, T] (a time per chunk step)."""
    t = t.reshape(*t.shape, *([1] * (actions.dim() - t.dim()))).to(actions.dtype)
    return t * noise + (1.0 - t) * actions


def target_velocity(actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """u = eps - a: [B, T, A]."""
    return noise - actions


def per_sample_loss(v_pred: torch.Tensor, u: torch.Tensor, step_mask: torch.Tensor | None = None,
                    dim_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked mean squared error per sample, in fp32: [B].

    step_mask [B, T] marks valid chunk steps (False past an episode's end);
    dim_mask [B, A] marks the action dims an embodiment really has (padding to
    the widest embodiment is ignored). Normalized by valid steps x valid dims.
    """
    err = (v_pred.float() - u.float()) ** 2  # [B, T, A]
    b, t, a = err.shape
    m = torch.ones(b, t, a, dtype=torch.float32, device=err.device)
    if step_mask is not None:
        m = m * step_mask.float().unsqueeze(-1)
    if dim_mask is not None:
        m = m * dim_mask.float().unsqueeze(1)
    return (err * m).sum((1, 2)) / m.sum((1, 2)).clamp_min(1.0)


def loss(v_pred, u, step_mask=None, dim_mask=None, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar flow-matching loss: mean over samples with weight (e.g. 0 for VQA samples)."""
    per = per_sample_loss(v_pred, u, step_mask, dim_mask)
    if sample_weight is None:
        return per.mean()
    w = sample_weight.float()
    return (per * w).sum() / w.sum().clamp_min(1.0)


def prefix_times(t: torch.Tensor, prefix_len: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-step flow times [B, steps]: 0 (clean) on each row's first prefix_len[b] steps, t[b] on the rest."""
    clean = torch.arange(steps, device=t.device)[None, :] < prefix_len.to(t.device)[:, None]
    return torch.where(clean, torch.zeros((), dtype=t.dtype, device=t.device), t[:, None].expand(-1, steps))


def cfm_losses(velocity_fn: VelocityFn, actions: torch.Tensor, step_mask: torch.Tensor | None,
               dim_mask: torch.Tensor | None, tau: torch.Tensor, eps: torch.Tensor,
               fold_mc: bool = False, prefix_len: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair CFM losses l[b, i] of each chunk under `velocity_fn`: [B, N] float32.

    velocity_fn(x_t [B', T, A], t [B']) -> v [B', T, A], conditioned on the
        observation batch (the policy's expert head with its observation prefix).
    actions [B, T, A] (normalized, padded to the widest embodiment);
    step_mask [B, T] (False past an episode's end) and dim_mask [B, A] (False on
        padded action dims), either may be None; tau [B, N]; eps [B, N, T, A].

    fold_mc=False calls velocity_fn N times with B' = B. fold_mc=True calls it
    once with B' = B*N in sample-major order (row b*N + i is sample b, pair i),
    so its conditioning must be repeated with `repeat_interleave(N, dim=0)`.

    prefix_len [B] (training-time action conditioning): sample b's first prefix_len[b] steps are given
    clean (t = 0 there, `prefix_times`) and carry no loss; velocity_fn then gets times [B', T].
    """
    b, t_len, a_dim = actions.shape
    if tau.dim() != 2 or tau.shape[0] != b:
        raise ValueError(f"tau must be [B={b}, N], got {tuple(tau.shape)}")
    n = tau.shape[1]
    if tuple(eps.shape) != (b, n, t_len, a_dim):
        raise ValueError(f"eps must be [B, N, T, A] = {(b, n, t_len, a_dim)}, got {tuple(eps.shape)}")
    if prefix_len is not None:
        if tuple(prefix_len.shape) != (b,):
            raise ValueError(f"prefix_len must be [B={b}], got {tuple(prefix_len.shape)}")
        free = torch.arange(t_len, device=actions.device)[None, :] >= prefix_len.to(actions.device)[:, None]
        step_mask = free if step_mask is None else step_mask.to(free.device) & free

    def times(tt, rows_prefix):
        return tt if prefix_len is None else prefix_times(tt, rows_prefix, t_len)

    if fold_mc:
        a = actions.repeat_interleave(n, dim=0)
        e = eps.reshape(b * n, t_len, a_dim)
        tt = times(tau.reshape(b * n), None if prefix_len is None else prefix_len.repeat_interleave(n, dim=0))
        sm = None if step_mask is None else step_mask.repeat_interleave(n, dim=0)
        dm = None if dim_mask is None else dim_mask.repeat_interleave(n, dim=0)
        v = velocity_fn(interpolate(a, e, tt), tt)
        return per_sample_loss(v, target_velocity(a, e), sm, dm).view(b, n)
    out = []
    for i in range(n):
        e, tt = eps[:, i], times(tau[:, i], prefix_len)
        v = velocity_fn(interpolate(actions, e, tt), tt)
        out.append(per_sample_loss(v, target_velocity(actions, e), step_mask, dim_mask))
    return torch.stack(out, dim=1)


@torch.no_grad()
def sample(velocity: VelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Euler ODE integration from t = 1 (noise [B, T, A]) to t = 0: returns actions [B, T, A]."""
    x = noise
    dt = 1.0 / num_steps
    for i in range(num_steps):
        t = torch.full((x.shape[0],), 1.0 - i * dt, dtype=torch.float32, device=x.device)
        x = x - dt * velocity(x, t)
    return x


# ---- real-time chunking (Black et al. 2025, ../shared/notes/rtc.md in our t = 1-is-noise convention) --------
GUIDANCE_CLIP = 5.0  # beta: the guidance weight's upper bound (the paper's value)


def rtc_weights(horizon: int, committed: int, delay: int) -> torch.Tensor:
    """Soft inpainting mask W [horizon] over a new chunk whose first `committed` steps the robot already
    plans to execute from its current chunk (the committed prefix, Y), `delay` of which run while the new
    chunk is computed: W = 1 on those `delay` steps, then an exponential decay to 0 at the prefix's end,
    and 0 past it (no old plan there)."""
    if not 0 <= delay <= committed <= horizon:
        raise ValueError(f"rtc_weights needs 0 <= delay <= committed <= horizon, got delay={delay}, "
                         f"committed={committed}, horizon={horizon}")
    w = torch.zeros(horizon, dtype=torch.float32)
    w[:delay] = 1.0
    if committed > delay:
        i = torch.arange(delay, committed, dtype=torch.float32)
        c = (committed - i) / (committed - delay + 1)
        w[delay:committed] = c * (torch.exp(c) - 1.0) / (math.e - 1.0)
    return w


def sample_guided(velocity: VelocityFn, noise: torch.Tensor, num_steps: int, target: torch.Tensor,
                  weights: torch.Tensor, beta: float = GUIDANCE_CLIP) -> torch.Tensor:
    """Euler integration like `sample`, with each step's velocity guided toward `target` Y [B, T, A] where
    `weights` W [B, T, A] > 0: v' = v - w * J^T [W * (Y - A_hat)], A_hat = x_t - t v (the predicted clean
    chunk), J = dA_hat/dx_t (one vector-Jacobian product through the velocity field), w = min(beta,
    t / ((1 - t) r^2)), r^2 = t^2 / ((1 - t)^2 + t^2). Rows with W = 0 get an exact zero correction; the
    velocity field must treat batch rows independently (ours does). A model trained to take the prefix
    clean needs no guidance: `sample_conditioned`."""
    if target.shape != noise.shape or weights.shape != noise.shape:
        raise ValueError(f"target and weights must have the noise's shape {list(noise.shape)}, got "
                         f"{list(target.shape)} and {list(weights.shape)}")
    x = noise
    dt = 1.0 / num_steps
    target, weights = target.to(noise), weights.to(noise)
    for i in range(num_steps):
        t_val = 1.0 - i * dt
        t = torch.full((x.shape[0],), t_val, dtype=torch.float32, device=x.device)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            v = velocity(xg, t)
            a_hat = xg - t_val * v
            (correction,) = torch.autograd.grad(a_hat, xg, grad_outputs=weights * (target - a_hat.detach()))
        r2 = t_val ** 2 / ((1.0 - t_val) ** 2 + t_val ** 2)
        w = beta if t_val >= 1.0 else min(beta, t_val / ((1.0 - t_val) * r2))
        x = (x - dt * (v.detach() - w * correction)).detach()
    return x


@torch.no_grad()
def sample_conditioned(velocity: VelocityFn, noise: torch.Tensor, num_steps: int, target: torch.Tensor,
                       known: torch.Tensor) -> torch.Tensor:
    """Euler integration like `sample` for a velocity field trained with per-step times (training-time
    action conditioning, `FlowConfig.prefix_conditioning`): the steps `known` [B, T] are given clean, equal
    to `target` Y [B, T, A] at t = 0 throughout, and only the other steps are integrated. No Jacobian is
    needed. A row with no known step is integrated exactly as `sample` would."""
    if target.shape != noise.shape or tuple(known.shape) != tuple(noise.shape[:2]):
        raise ValueError(f"target must have the noise's shape {list(noise.shape)} and known its first two dims, got "
                         f"{list(target.shape)} and {list(known.shape)}")
    known = known.to(noise.device)
    hold = known.unsqueeze(-1)
    target = target.to(noise)
    x = torch.where(hold, target, noise)
    dt = 1.0 / num_steps
    for i in range(num_steps):
        t = torch.where(known, 0.0, 1.0 - i * dt).to(torch.float32)
        x = torch.where(hold, target, x - dt * velocity(x, t))
    return x
