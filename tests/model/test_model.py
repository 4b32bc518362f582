import dataclasses

import numpy as np
import pytest
import torch

from syvla.model.processing import build_batch

from model_testlib import robot_sample


def test_query_states_feed_the_expert_and_receive_gradient(model, cfg, norm_stats):
    rng = np.random.default_rng(0)
    b = build_batch([robot_sample(rng), robot_sample(rng, cot="plan: step one")], model.processor, cfg, norm_stats)
    model.zero_grad(set_to_none=True)
    out = model(b, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert out.action_loss.item() > 0 and out.lm_loss.item() > 0
    assert model.query_tokens.embeddings.grad.abs().sum() > 0
    assert model.adapter.net[1].weight.grad.abs().sum() > 0
    assert model.vlm.model.language_model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_sampling_is_deterministic_for_fixed_noise(model, cfg, norm_stats):
    rng = np.random.default_rng(1)
    b = build_batch([robot_sample(rng)], model.processor, cfg, norm_stats, training=False)
    noise = torch.randn(1, 50, 4, generator=torch.Generator().manual_seed(0))
    a1, a2 = model.sample_actions(b, noise=noise), model.sample_actions(b, noise=noise)
    assert torch.equal(a1, a2) and a1.shape == (1, 50, 4)
    with pytest.raises(ValueError, match="noise must have shape"):
        model.sample_actions(b, noise=torch.randn(1, 10, 4))


@pytest.mark.slow
def test_debug_model_overfits_one_batch(cfg, norm_stats):
    """Flow-matching loss on one fixed small batch falls by at least 90% within a few hundred CPU steps."""
    from syvla.model.syvla import SyVLA

    torch.manual_seed(0)
    model = SyVLA(cfg)
    rng = np.random.default_rng(0)
    samples = [robot_sample(rng) for _ in range(4)]
    samples = [dataclasses.replace(s, actions=np.cumsum(rng.normal(0, 0.05, size=(50, 4)), axis=0).astype(np.float32))
               for s in samples]  # smooth, learnable chunks
    batch = build_batch(samples, model.processor, cfg, norm_stats)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)

    def eval_loss():  # fixed times and noise, so the number is comparable across steps
        with torch.no_grad():
            return np.mean([model(batch, torch.Generator().manual_seed(100 + k), decoupling=False).action_loss.item()
                            for k in range(4)])

    first = eval_loss()
    steps = 400
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    for _ in range(steps):
        out = model(batch, gen)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    last = eval_loss()
    assert last < 0.1 * first, (first, last)
