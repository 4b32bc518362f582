import itertools

import numpy as np
import pytest
import torch

from syvla.model.config import VisionTowerConfig
from syvla.rl.advantages import monte_carlo_returns
from syvla.rl.value import (RETURNS, ValueConfig, ValueModel, debug_value_config, paper_value_config, value_loss,
                            value_preset, warmup_value)


def test_paper_preset_is_about_100m_parameters():
    with torch.device("meta"):
        model = ValueModel(paper_value_config())
    n = sum(p.numel() for p in model.parameters())
    print(f"paper value model: {n / 1e6:.1f}M parameters")  # 98.8M: SigLIP-B/16 tower 85.8M + trunk 12.6M
    assert 80e6 <= n <= 120e6  # App. A: "about 100M"
    assert n == 98_827_009  # recorded: catches accidental size changes


def test_forward_shapes_resize_and_state_contract():
    torch.manual_seed(0)
    model = ValueModel(debug_value_config(state_dim=5)).eval()
    images = torch.rand(4, 3, 3, 40, 48)  # any size: resized to the tower's 32 px
    v = model(images, torch.randn(4, 5))
    assert v.shape == (4,) and v.dtype == torch.float32
    with pytest.raises(ValueError, match="state_dim=5"):
        model(images)
    with pytest.raises(ValueError, match=r"\[B, V=3"):
        model(images[:, :2], torch.randn(4, 5))
    no_state = ValueModel(debug_value_config())
    with pytest.raises(ValueError, match="state_dim=0"):
        no_state(images, torch.randn(4, 5))
    assert no_state(images).shape == (4,)


def test_value_loss_is_huber():
    pred = torch.tensor([0.0, 0.0, 3.0])
    target = torch.tensor([0.5, 2.0, 0.0])
    # delta 1: 0.5*0.25 = 0.125 ; |2| > 1: 1*(2 - 0.5) = 1.5 ; |3| > 1: 3 - 0.5 = 2.5
    assert value_loss(pred, target).item() == pytest.approx((0.125 + 1.5 + 2.5) / 3)
    assert value_loss(pred, target, weight=torch.tensor([1.0, 0.0, 0.0])).item() == pytest.approx(0.125)
    with pytest.raises(ValueError, match=r"\[B\]"):
        value_loss(pred, target[:2])


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="ValueConfig.tokens_per_view"):
        ValueConfig(tokens_per_view=3)
    with pytest.raises(ValueError, match="ValueConfig.width"):
        ValueConfig(width=30, num_heads=4)
    with pytest.raises(ValueError, match="ValueConfig.tokens_per_view 25 exceeds"):
        ValueConfig(vision=VisionTowerConfig(image_size=16, patch_size=8), tokens_per_view=25)
    with pytest.raises(KeyError, match="unknown value preset"):
        value_preset("huge")


def _toy_dataset(n_traj=8, length=6, gamma=0.9, seed=0):
    """8 short demonstrations whose images show progress: channel 0 is a bar filled to t/(T-1) of the width,
    channel 1 is bright when the episode will succeed, channel 2 noise. Rewards 0/1 at the end."""
    g = torch.Generator().manual_seed(seed)
    images, returns = [], []
    for i in range(n_traj):
        success = i % 2 == 0
        rewards = np.zeros(length)
        rewards[-1] = float(success)
        returns.append(torch.from_numpy(monte_carlo_returns(rewards, gamma=gamma)))
        for t in range(length):
            img = torch.zeros(3, 3, 32, 32)  # [V, 3, H, W]
            img[:, 0, :, : round(32 * t / (length - 1))] = 1.0
            img[:, 1] = 0.8 if success else 0.2
            img[:, 2] = torch.rand(3, 32, 32, generator=g)
            images.append(img)
    return torch.stack(images), torch.cat(returns)


def test_warmup_fits_monte_carlo_returns():
    torch.manual_seed(0)
    images, returns = _toy_dataset()
    assert images.shape == (48, 3, 3, 32, 32)
    assert returns[:6].tolist() == pytest.approx([0.9 ** 5, 0.9 ** 4, 0.9 ** 3, 0.81, 0.9, 1.0])
    assert returns[6:12].tolist() == [0.0] * 6  # a failed episode
    train, held_out = slice(0, 36), slice(36, 48)  # 6 episodes to fit, 2 (one success, one failure) held out
    model = ValueModel(debug_value_config())
    batch = {"images": images[train], RETURNS: returns[train]}
    history = warmup_value(model, itertools.repeat(batch), max_steps=80, lr=3e-3)
    assert len(history) == 80
    assert history[-1] <= 0.2 * history[0], (history[0], history[-1])  # loss falls >= 80%
    with torch.no_grad():
        pred = model(images[held_out])
    corr = np.corrcoef(pred.numpy(), returns[held_out].numpy())[0, 1]
    assert corr > 0.9, corr
    assert (pred - returns[held_out]).abs().max().item() < 0.1
    assert not model.training


def test_warmup_requires_the_return_targets():
    model = ValueModel(debug_value_config())
    with pytest.raises(KeyError, match="returns"):
        warmup_value(model, [{"images": torch.rand(2, 3, 3, 32, 32)}])


def test_build_loads_a_local_siglip_tower(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(1)
    vis = VisionTowerConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=1, num_heads=2,
                            intermediate_size=64, pretrained=str(tmp_path / "siglip"))
    saved = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2, image_size=32, patch_size=8))
    saved.save_pretrained(vis.pretrained)  # with its pooling head: the value model drops it
    model = ValueModel.build(debug_value_config(vision=vis))
    want = {k: v for k, v in saved.state_dict().items() if "head" not in k.split(".")}
    got = model.vision.state_dict()
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k])
    wrong = VisionTowerConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2,
                              intermediate_size=64, pretrained=vis.pretrained)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        ValueModel.build(debug_value_config(vision=wrong))
