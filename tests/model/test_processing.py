import dataclasses

import numpy as np
import pytest

from syvla.model import vlm as V
from syvla.model.processing import IGNORE, build_batch

from model_testlib import robot_sample, vqa_sample


def test_debug_processor_really_tokenizes_text_and_images(model):
    proc = model.processor
    tok = proc.tokenizer
    ids = tok("push the red puck", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "push the red puck"
    for special in (V.IM_START, V.IM_END, V.IMAGE_PAD, V.VISION_START, V.QUERY_TOKEN):
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    img = np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8)
    enc = proc(text=[f"{V.VISION_START}{V.IMAGE_PAD}{V.VISION_END}hi"], images=[img], return_tensors="pt")
    grid = enc["image_grid_thw"][0]
    n_pad = (enc["input_ids"] == tok.convert_tokens_to_ids(V.IMAGE_PAD)).sum().item()
    assert grid.tolist() == [1, 4, 4] and n_pad == 4  # 56 px / 14 = 4x4 patches, merged 2x2
    assert enc["pixel_values"].shape == (16, 3 * 2 * 14 * 14)


def test_mixed_batch_layout(model, cfg, norm_stats):
    rng = np.random.default_rng(0)
    samples = [robot_sample(rng), robot_sample(rng, cot="first reach, then stop"), vqa_sample(rng), robot_sample(rng)]
    b = build_batch(samples, model.processor, cfg, norm_stats)
    tok = model.processor.tokenizer
    assert b.query_mask.sum(1).tolist() == [20, 20, 0, 20]
    assert b.robot_rows.tolist() == [0, 1, 3]
    # Query tokens come last (left padding); labels cover only CoT / answers and their <|im_end|>.
    assert b.query_mask[:, -20:][[0, 1, 3]].all()
    assert (b.lm_labels[0] == IGNORE).all() and (b.lm_labels[3] == IGNORE).all()
    assert tok.decode(b.lm_labels[1][b.lm_labels[1] != IGNORE]) == "first reach, then stop<|im_end|>"
    assert tok.decode(b.lm_labels[2][b.lm_labels[2] != IGNORE]) == "red<|im_end|>"
    # States and actions are normalized with the dataset's statistics.
    st = norm_stats["metaworld"].state
    np.testing.assert_allclose(b.state[0].numpy(), (samples[0].state - st.mean) / (st.std + 1e-6), rtol=1e-5, atol=1e-5)
    assert b.images.shape == (3, 3, 3, cfg.expert.vision.image_size, cfg.expert.vision.image_size)
    assert 0.0 <= b.images.min() and b.images.max() <= 1.0


def test_bad_samples_name_the_problem(model, cfg, norm_stats):
    rng = np.random.default_rng(0)
    s = robot_sample(rng)
    s = dataclasses.replace(s, images={k: v for k, v in s.images.items() if k != "topview"})
    with pytest.raises(ValueError, match="missing camera.*topview"):
        build_batch([s], model.processor, cfg, norm_stats)
    s = dataclasses.replace(robot_sample(rng), state=np.zeros(7, np.float32))
    with pytest.raises(ValueError, match=r"state .* shape \[39\]"):
        build_batch([s], model.processor, cfg, norm_stats)
    s = dataclasses.replace(robot_sample(rng), embodiment="aloha")
    with pytest.raises(KeyError, match="unknown embodiment 'aloha'"):
        build_batch([s], model.processor, cfg, norm_stats)
    from syvla.normalize import NormStats

    with pytest.raises(KeyError, match="no normalization statistics for dataset 'metaworld'"):
        build_batch([robot_sample(rng)], model.processor, cfg, NormStats({}))


def test_vqa_batch_trains_the_lm_path_only(model, cfg, norm_stats):
    rng = np.random.default_rng(3)
    b = build_batch([vqa_sample(rng), vqa_sample(rng, "blue")], model.processor, cfg, norm_stats)
    model.zero_grad(set_to_none=True)
    out = model(b)
    out.loss.backward()
    assert out.action_loss.item() == 0.0 and out.lm_loss.item() > 0
    assert all(p.grad is None for p in model.expert.parameters())
    assert all(p.grad is None for p in model.adapter.parameters())
    assert model.vlm.get_input_embeddings().weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
