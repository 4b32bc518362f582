"""The driver resolves the run's model from the prepared data (and the checkpoint) before any worker starts."""

import dataclasses

import pytest
from train_helpers import CHUNK, synthetic_table, write_prepared

from syvla.data import prepared
from syvla.model.config import ActionExpertConfig, EmbodimentConfig, debug_config
from syvla.model.policy import make_debug_checkpoint
from syvla.train.config import DataConfig, preset
from syvla.train.embodiments import data_embodiments, resolve_model

ARM = EmbodimentConfig("arm", state_dim=3, action_dim=2, cameras=("cam",))


def _cfg(root, init_from=""):
    base = preset("finetune-debug" if init_from else "pretrain-debug")
    model = debug_config(embodiments=(ARM,), expert=ActionExpertConfig(chunk_len=CHUNK))
    return dataclasses.replace(base, model=model, init_from=init_from, data=DataConfig(path=str(root)))


@pytest.fixture
def robot_root(tmp_path):
    root = tmp_path / "prep"
    write_prepared(root, {"synthetic": synthetic_table(episodes=2, frames=12)})
    return root


def test_pretraining_builds_exactly_the_prepared_robots(robot_root):
    (e,) = data_embodiments(robot_root)
    assert (e.name, e.state_dim, e.action_dim, e.cameras) == ("synthetic", 7, 4, ("corner2", "topview", "gripperPOV"))
    cfg = resolve_model(_cfg(robot_root))
    assert cfg.model.embodiments == (e,)


def test_finetuning_adds_the_new_robot_and_applies_only_allowed_flags(robot_root, tmp_path):
    ckpt = make_debug_checkpoint(tmp_path / "ckpt", cfg=debug_config(embodiments=(ARM,),
                                                                      expert=ActionExpertConfig(chunk_len=CHUNK)))
    cfg = resolve_model(_cfg(robot_root, str(ckpt)), {"decoupling.tau": 0.1})
    assert [e.name for e in cfg.model.embodiments] == ["arm", "synthetic"]
    assert cfg.model.decoupling.tau == 0.1
    with pytest.raises(ValueError, match=r"--model\.num_query_tokens cannot be set"):
        resolve_model(_cfg(robot_root, str(ckpt)), {"num_query_tokens": 4})
    # Training-time action conditioning on top of a checkpoint: the per-step time embedding is added.
    cfg = resolve_model(_cfg(robot_root, str(ckpt)), {"expert.step_times": True, "flow.prefix_conditioning": 0.5,
                                                         "flow.max_prefix": 4})
    assert cfg.model.expert.step_times and cfg.model.flow.prefix_conditioning == 0.5
    with pytest.raises(ValueError, match=r"prefix_conditioning > 0 needs expert\.step_times"):
        resolve_model(_cfg(robot_root, str(ckpt)), {"flow.prefix_conditioning": 0.5})


def test_missing_statistics_and_unrecorded_embodiments_are_named(robot_root):
    prepared.norm_stats_path(robot_root).write_text("{}")
    with pytest.raises(KeyError, match="no normalization statistics for dataset 'synthetic'"):
        resolve_model(_cfg(robot_root))
    m = prepared.read_manifest(robot_root)
    entry = dataclasses.replace(m.datasets["synthetic"], embodiment=None, kind="robot")
    prepared.write_manifest(robot_root, dataclasses.replace(m, datasets={"synthetic": entry}))
    with pytest.raises(ValueError, match=r"dataset\(s\) \['synthetic'\] record no embodiment"):
        data_embodiments(robot_root)


def test_given_embodiments_must_match_the_data_and_set_what_it_does_not_record(robot_root):
    (e,) = data_embodiments(robot_root)
    given = dataclasses.replace(e, vlm_camera="topview")
    assert resolve_model(_cfg(robot_root), {"embodiments": (given,)}).model.embodiments == (given,)
    with pytest.raises(ValueError, match=r"names 'arm', which is not in the prepared data"):
        resolve_model(_cfg(robot_root), {"embodiments": (ARM,)})
    with pytest.raises(ValueError, match=r"'synthetic' has state_dim 9 but the prepared data .* has 7"):
        resolve_model(_cfg(robot_root), {"embodiments": (dataclasses.replace(e, state_dim=9),)})


def test_export_replaces_a_policy_but_never_a_users_folder(tmp_path):
    from syvla.train.pipeline import export_policy

    src = make_debug_checkpoint(tmp_path / "src", cfg=debug_config(embodiments=(ARM,)))
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a policy checkpoint"):
        export_policy(src, user)
    assert (user / "notes.txt").read_text() == "keep me"
    dest = export_policy(src, tmp_path / "out")
    assert export_policy(src, dest) == dest and (dest / "config.json").exists()  # a policy is replaced
