import dataclasses

import pytest
import torch

from syvla.model.config import ActionExpertConfig, DecouplingConfig, EmbodimentConfig, SyVLAConfig, VLMConfig, paper_config, preset
from syvla.sim import metaworld as mw


def test_bad_fields_are_named():
    with pytest.raises(ValueError, match="tau"):
        DecouplingConfig(tau=1.5)
    with pytest.raises(ValueError, match="width .* divisible by num_heads"):
        ActionExpertConfig(width=30, num_heads=4)
    with pytest.raises(ValueError, match="image_size"):
        VLMConfig(image_size=50)
    with pytest.raises(ValueError, match="vlm_camera"):
        EmbodimentConfig("r", 3, 2, cameras=("a",), vlm_camera="b")
    with pytest.raises(KeyError, match="unknown model preset"):
        preset("huge")


def test_config_dict_round_trip():
    cfg = paper_config(embodiments=(mw.EMBODIMENT,))
    assert SyVLAConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_action_expert_parameter_count():
    """App. A: the action expert is ~0.69B. Counted: the 15-layer transformer (self-attn,
    cross-attn to C, MLP, norms), its SigLIP-L/16 tower, the time MLP, chunk/view embeddings and
    one embodiment's state/action encoder-decoder. Not counted: the adapter (part of the bridge)."""
    from syvla.model.action_expert import ActionExpert

    cfg = paper_config(embodiments=(mw.EMBODIMENT,))
    assert (cfg.expert.depth, cfg.expert.width, cfg.expert.num_heads, cfg.expert.ff_ratio, cfg.expert.chunk_len) == (15, 1408, 32, 2.67, 50)
    with torch.device("meta"):
        expert = ActionExpert(cfg.expert, cfg.embodiments, cfg.max_cameras)
    n = sum(p.numel() for p in expert.parameters())
    assert abs(n - 0.69e9) / 0.69e9 < 0.10, n
    # recorded: 712,185,157 with the tower (303,361,024 of it)
    assert n == 712_185_157


def test_replace_keeps_validation():
    with pytest.raises(ValueError):
        dataclasses.replace(SyVLAConfig(embodiments=(mw.EMBODIMENT,)), num_query_tokens=0)


def test_every_templated_plan_fits_the_debug_presets_chain_of_thought_bound():
    """Think-Before-Act generates at most max_cot_tokens: a plan longer than that is cut mid-sentence at
    inference although training saw it whole."""
    from syvla.model.config import debug_config
    from syvla.model.vlm import build_debug_processor
    from syvla.sim import metaworld as mw

    cfg = debug_config(embodiments=(mw.EMBODIMENT,))
    tok = build_debug_processor(cfg.vlm).tokenizer
    longest = max(len(tok(mw.plan_text(task, step, done=done), add_special_tokens=False)["input_ids"])
                  for task, plan in mw.TASK_PLANS.items() for step in range(len(plan))
                  for done in (False, True))
    assert longest < cfg.max_cot_tokens, (longest, cfg.max_cot_tokens)
