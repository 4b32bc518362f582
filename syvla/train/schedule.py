"""Learning-rate schedule of the paper's Table 7: cosine with warm-up.

Linear warm-up from 0 to `peak_lr` over `warmup_steps`, then a half cosine from
`peak_lr` down to `decay_lr` at `total_steps`, constant `decay_lr` after. The rate
is a pure function of the step, so resuming needs no scheduler state.
"""

from __future__ import annotations

import math


def cosine_with_warmup(step: int, *, peak_lr: float, decay_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based: the rate the step-th update uses)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0 or step >= total_steps:
        return decay_lr
    progress = (step - warmup_steps) / decay_steps
    return decay_lr + 0.5 * (peak_lr - decay_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
