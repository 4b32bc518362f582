"""Intention Decoupling (§3.2).

Pass 1 runs the action expert on the Feature Query States H and takes the
gradient of the action loss with respect to H only (no parameter gradients,
no second VLM forward). States whose gradient L2 norm falls below the
τ-quantile of all norms are zeroed. Pass 2, the one that is optimized, runs
the expert on the masked H.
"""

from __future__ import annotations

from typing import Callable

import torch


def quantile_mask(grad_norms: torch.Tensor, tau: float) -> torch.Tensor:
    """Keep-mask [B, n]: True where ||g_i|| >= the τ-quantile of the norms.

    The quantile is taken over all B*n states of the batch (the paper's "gradient-norm
    distribution"); with τ = 0 nothing is masked. Exactly floor(τ·B·n) states, the
    lowest-norm ones, are masked (ties broken by position).
    """
    flat = grad_norms.flatten()
    k = int(tau * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k > 0:
        lowest = torch.topk(flat, k, largest=False, sorted=False).indices
        keep[lowest] = False
    return keep.view_as(grad_norms)


def decoupled_states(
    states: torch.Tensor,
    action_loss_fn: Callable[[torch.Tensor], torch.Tensor],
    tau: float,
    probe_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (masked H [B, n, d] still attached to the VLM graph, keep-mask [B, n]).

    action_loss_fn maps Feature Query States to the scalar action loss. Pass 1 is
    run on a detached leaf copy of H, so torch.autograd.grad touches no parameter
    gradient and the VLM is not run again. With probe_dtype other than float32, pass 1 runs
    under autocast in that dtype: only the ranking of the norms is used.
    """
    if tau <= 0.0:
        return states, torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
    probe = states.detach().requires_grad_(True)
    autocast = torch.autocast(states.device.type, dtype=probe_dtype, enabled=probe_dtype != torch.float32)
    with torch.enable_grad(), autocast:
        loss = action_loss_fn(probe)
        (grad,) = torch.autograd.grad(loss, probe)
    keep = quantile_mask(grad.float().norm(dim=-1), tau)
    return states * keep.unsqueeze(-1).to(states.dtype), keep
