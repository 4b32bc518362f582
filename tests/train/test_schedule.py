import math

import pytest

from syvla.train.schedule import cosine_with_warmup

PRETRAIN = dict(peak_lr=1e-4, decay_lr=1e-5, warmup_steps=5000, total_steps=100_000)  # Table 7
FINETUNE = dict(peak_lr=3e-5, decay_lr=3e-6, warmup_steps=1000, total_steps=30_000)


@pytest.mark.parametrize("step, lr", [
    (0, 2e-8), (2499, 5e-5), (4999, 1e-4),          # linear warm-up to the peak
    (5000, 1e-4), (27_500, 8.810757598029093e-05),   # cosine: 1e-5 + 4.5e-5 * (1 + cos(pi * 22500 / 95000))
    (52_500, 5.5e-05),                               # half way down: the mean of peak and decay
    (100_000, 1e-5), (150_000, 1e-5),                # decay lr from the last step on
])
def test_pretrain_schedule_recorded_values(step, lr):
    assert math.isclose(cosine_with_warmup(step, **PRETRAIN), lr, rel_tol=1e-9)


@pytest.mark.parametrize("step, lr", [(0, 3e-8), (999, 3e-5), (8250, 2.604594154601839e-05), (15_500, 1.65e-05),
                                      (30_000, 3e-6)])
def test_finetune_schedule_recorded_values(step, lr):
    assert math.isclose(cosine_with_warmup(step, **FINETUNE), lr, rel_tol=1e-9)


def test_schedule_is_monotone_after_warmup_and_bounded():
    lrs = [cosine_with_warmup(s, **FINETUNE) for s in range(0, 31_000, 50)]
    peak = lrs.index(max(lrs))
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert min(lrs) >= 3e-8 and max(lrs) <= 3e-5


def test_no_warmup_and_negative_step():
    assert cosine_with_warmup(0, peak_lr=1.0, decay_lr=0.0, warmup_steps=0, total_steps=10) == 1.0
    with pytest.raises(ValueError, match="step"):
        cosine_with_warmup(-1, **PRETRAIN)
