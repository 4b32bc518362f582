"""Real-time chunking in the flow sampler: the soft mask, the guidance's sign, inpainting of the committed
prefix on the debug model, and batches that mix guided and plain requests."""

import math

import numpy as np
import pytest
import torch

from syvla.model import flow


def test_soft_mask_is_one_on_the_delay_then_decays_to_zero_at_the_prefix_end():
    w = flow.rtc_weights(50, committed=30, delay=5)
    assert torch.all(w[:5] == 1) and torch.all(w[30:] == 0)
    assert torch.all(w[5:30] > 0) and torch.all(w[5:30] < 1) and torch.all(w[5:29] > w[6:30])
    c = (30 - 5) / (30 - 5 + 1)
    assert w[5].item() == pytest.approx(c * (math.exp(c) - 1) / (math.e - 1), rel=1e-6)
    assert torch.all(flow.rtc_weights(50, 0, 0) == 0)
    with pytest.raises(ValueError, match="delay <= committed"):
        flow.rtc_weights(50, committed=3, delay=4)


def test_one_guided_step_moves_the_predicted_chunk_toward_the_prefix():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4)

    def velocity(x, t):  # a smooth nonlinear field, rows independent
        return torch.tanh(lin(x)) + t.view(-1, 1, 1)

    noise, target = torch.randn(2, 8, 4), torch.randn(2, 8, 4)
    weights = flow.rtc_weights(8, 6, 3).view(1, 8, 1).expand(2, 8, 4).clone()

    def error(x, t):
        with torch.no_grad():
            a_hat = x - t * velocity(x, torch.full((2,), t))
        return float((weights * (target - a_hat)).pow(2).sum())

    plain = flow.sample(velocity, noise, 1)
    # One step from t = 1 to 0 lands on the prediction; a small guidance weight (first order) must lower its
    # error: the sign of the correction. (beta = 5 over one whole step overshoots; 10 steps do not, below.)
    guided = flow.sample_guided(velocity, noise, 1, target, weights, beta=0.05)
    assert error(guided, 0.0) < error(plain, 0.0)
    many = flow.sample_guided(velocity, noise, 10, target, weights)
    assert error(many, 0.0) < 0.5 * error(flow.sample(velocity, noise, 10), 0.0)
    zero = flow.sample_guided(velocity, noise, 4, target, torch.zeros_like(weights))
    assert torch.equal(zero, flow.sample(velocity, noise, 4))  # W = 0: exactly the plain sampler


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from syvla.model.policy import Policy, make_debug_checkpoint
    from syvla.sim import metaworld as mw

    return Policy.load(make_debug_checkpoint(tmp_path_factory.mktemp("rtc") / "c", embodiments=(mw.EMBODIMENT,)))


def _obs(seed, rng_seed=0):
    from syvla.sim import metaworld as mw

    rng = np.random.default_rng(rng_seed)
    return {"embodiment": mw.DATASET_NAME, "state": rng.normal(size=39).astype(np.float32),
            "images": {c: rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for c in mw.CAMERAS},
            "instruction": "push the puck to the goal", "seed": seed}


def test_inpainting_reproduces_the_committed_prefix(policy):
    old = policy.infer(_obs(seed=4))["actions"]
    prefix = old[10:40]  # 10 actions of the old chunk executed, 30 still planned
    plain = policy.infer(_obs(seed=3))["actions"]
    got = policy.infer({**_obs(seed=3), "prefix_actions": prefix, "prefix_delay": 6})["actions"]
    scale = float(np.abs(prefix).mean())
    assert np.abs(plain[:6] - prefix[:6]).max() > 1.0 * scale  # an independent sample is far from it
    assert np.abs(got[:6] - prefix[:6]).max() < 0.15 * scale, np.abs(got[:6] - prefix[:6]).max()
    # The decaying part is pulled less, and past the prefix the chunk is free.
    assert np.abs(got[6:30] - prefix[6:30]).mean() < np.abs(plain[6:30] - prefix[6:30]).mean()


def test_a_batch_mixing_guided_and_plain_requests_answers_each_as_alone(policy):
    old = policy.infer(_obs(seed=9, rng_seed=1))["actions"]
    guided = {**_obs(seed=3), "prefix_actions": old[10:], "prefix_delay": 4}
    plain = _obs(seed=5, rng_seed=2)
    both = policy.infer_batch([guided, plain])
    np.testing.assert_allclose(both[0]["actions"], policy.infer(guided)["actions"], atol=1e-5)
    np.testing.assert_allclose(both[1]["actions"], policy.infer(plain)["actions"], atol=1e-5)


def test_bad_prefixes_are_refused_by_name(policy):
    from syvla.model.sample import ObservationError

    with pytest.raises(ObservationError, match="prefix_actions"):
        policy.infer({**_obs(seed=1), "prefix_actions": np.zeros((51, 4), np.float32)})
    with pytest.raises(ObservationError, match="prefix_actions"):
        policy.infer({**_obs(seed=1), "prefix_actions": np.zeros((5, 3), np.float32)})
    with pytest.raises(ObservationError, match="prefix_delay"):
        policy.infer({**_obs(seed=1), "prefix_actions": np.zeros((5, 4), np.float32), "prefix_delay": 6})
    with pytest.raises(ObservationError, match="prefix_actions"):
        policy.infer({**_obs(seed=1), "prefix_actions": np.full((5, 4), np.nan, np.float32)})


def test_reused_feature_query_states_skip_the_vlm_and_match_a_fresh_call(policy, monkeypatch):
    obs = _obs(seed=2)
    fresh = policy.infer_batch([obs], states=[None])[0]
    np.testing.assert_array_equal(fresh["actions"], policy.infer(obs)["actions"])
    model = policy._loaded.model

    def no_vlm(*a, **k):
        raise AssertionError("the VLM ran although the states were given")

    monkeypatch.setattr(model, "query_states", no_vlm)
    monkeypatch.setattr(model, "vlm_hidden", no_vlm)
    again = policy.infer_batch([obs], states=[fresh["states"]])[0]
    np.testing.assert_allclose(again["actions"], fresh["actions"], atol=1e-6)  # same images, same states
    later = policy.infer_batch([_obs(seed=2, rng_seed=5)], states=[fresh["states"]])[0]
    assert not np.allclose(later["actions"], fresh["actions"])  # the expert still sees the new frame
    monkeypatch.undo()
    mixed = policy.infer_batch([obs, _obs(seed=7, rng_seed=3)], states=[fresh["states"], None])
    np.testing.assert_allclose(mixed[0]["actions"], fresh["actions"], atol=1e-5)
    np.testing.assert_allclose(mixed[1]["actions"], policy.infer(_obs(seed=7, rng_seed=3))["actions"], atol=1e-5)
