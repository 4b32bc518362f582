import pytest
import torch

from syvla.model.config import EmbodimentConfig, debug_config
from syvla.model.transfer import add_embodiments, finetune_config, fit_state_dict, fresh_prefixes

ARM = EmbodimentConfig("arm", state_dim=39, action_dim=4, cameras=("corner2", "topview", "gripperPOV"))
ROBOT = EmbodimentConfig("myrobot", state_dim=6, action_dim=7, cameras=("front", "top", "wrist", "side"))


def test_new_embodiments_are_appended_and_known_ones_kept():
    base = debug_config(embodiments=(ARM,))
    cfg = add_embodiments(base, [ARM, ROBOT])
    assert [e.name for e in cfg.embodiments] == ["arm", "myrobot"]
    assert cfg.max_action_dim == 7 and cfg.max_cameras == 4
    assert add_embodiments(base, [ARM]) is base
    assert fresh_prefixes(base, cfg) == ("expert.io.myrobot.",)


def test_a_known_name_with_other_dims_is_refused():
    other = EmbodimentConfig("arm", state_dim=12, action_dim=4, cameras=ARM.cameras)
    with pytest.raises(ValueError, match=r"embodiment 'arm'.*state_dim 12.*39"):
        add_embodiments(debug_config(embodiments=(ARM,)), [other])


def test_allowed_overrides_apply_and_others_are_refused_by_name():
    base = debug_config(embodiments=(ARM,))
    cfg = finetune_config(base, [ROBOT], {"decoupling.tau": 0.1, "flow.num_steps": 4, "max_cot_tokens": 8})
    assert (cfg.decoupling.tau, cfg.flow.num_steps, cfg.max_cot_tokens) == (0.1, 4, 8)
    assert cfg.expert == base.expert and cfg.vlm == base.vlm
    with pytest.raises(ValueError, match=r"--model\.expert\.width cannot be set"):
        finetune_config(base, [], {"expert.width": 128, "decoupling.tau": 0.1})


def test_view_embedding_grows_and_keeps_the_checkpoint_rows():
    old = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)
    fresh = torch.full((4, 3, 4), -1.0)
    out = fit_state_dict({"expert.view_embed": old}, {"expert.view_embed": fresh})["expert.view_embed"]
    assert torch.equal(out[:2], old) and torch.equal(out[2:], fresh[2:])
    with pytest.raises(ValueError, match="expert.chunk_pos has shape"):
        fit_state_dict({"expert.chunk_pos": torch.zeros(50, 4)}, {"expert.chunk_pos": torch.zeros(40, 4)})


def test_a_field_equal_to_the_checkpoints_passes_and_a_different_one_is_named():
    from syvla.model.transfer import check_finetune_overrides

    base = debug_config(embodiments=(ARM,))
    check_finetune_overrides({"expert.width": base.expert.width, "embodiments": (ROBOT,)}, base)  # a saved run config
    with pytest.raises(ValueError, match=r"--model\.expert\.width cannot be set .*\(it has 64\)"):
        check_finetune_overrides({"expert.width": 128}, base)
    with pytest.raises(ValueError, match=r"--model\.expert\.width"):
        check_finetune_overrides({"expert.width": base.expert.width})  # no checkpoint config to compare with
