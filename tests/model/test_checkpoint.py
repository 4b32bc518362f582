import json
import pickle

import numpy as np
import pytest
import torch

from syvla.model import checkpoint as C
from syvla.model.checkpoint import load_checkpoint, save_checkpoint
from syvla.model.policy import Policy, make_debug_checkpoint
from syvla.model.sample import ObservationError
from syvla.sim import metaworld as mw

from model_testlib import robot_sample


def _obs(rng, seed=7):
    s = robot_sample(rng)
    return {"embodiment": "metaworld", "images": s.images, "state": s.state, "instruction": "reach the goal", "seed": seed}


def test_save_reload_gives_identical_actions(tmp_path, model, norm_stats):
    save_checkpoint(tmp_path / "ck", model, norm_stats, policy_version=5)
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == sorted([C.CONFIG_FILE, C.VLM_CONFIG_FILE, C.WEIGHTS_FILE, C.NORM_STATS_FILE,
                            C.PROCESSOR_DIR, C.POLICY_VERSION_FILE])
    before = Policy(model, norm_stats, 5)
    after = Policy.load(tmp_path / "ck")
    assert after.policy_version == 5
    obs = _obs(np.random.default_rng(0))
    a, b = before.infer(obs), after.infer(obs)
    np.testing.assert_array_equal(a["actions"], b["actions"])
    assert a["actions"].shape == (50, 4)
    # Actions come back in the robot's units: unnormalized with the action statistics.
    assert abs(float(np.mean(a["actions"])) - float(norm_stats["metaworld"].action.mean.mean())) < 2.0


def test_loading_never_unpickles(tmp_path, model, norm_stats, monkeypatch):
    save_checkpoint(tmp_path / "ck", model, norm_stats)

    def refuse(*a, **k):
        raise AssertionError("unpickling on a load path")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_checkpoint(tmp_path / "ck")


def test_missing_pieces_raise(tmp_path, model, norm_stats):
    from syvla.normalize import NormStats

    with pytest.raises(KeyError, match="normalization statistics for \\['metaworld'\\]"):
        save_checkpoint(tmp_path / "bad", model, NormStats({}))
    ck = save_checkpoint(tmp_path / "ck", model, norm_stats)
    (ck / C.NORM_STATS_FILE).write_text(json.dumps({"metaworld": {"state": norm_stats["metaworld"].state.to_dict()}}))
    with pytest.raises(KeyError, match="lack 'action'"):
        load_checkpoint(ck)
    (ck / C.NORM_STATS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="norm_stats.json"):
        load_checkpoint(ck)


def test_policy_rejects_bad_observations(tmp_path):
    policy = Policy.load(make_debug_checkpoint(tmp_path / "ck", embodiments=(mw.EMBODIMENT,)))
    good = _obs(np.random.default_rng(0))
    cases = {
        "embodiment": {**good, "embodiment": "aloha"},
        "images.gripperPOV": {**good, "images": {k: v for k, v in good["images"].items() if k != "gripperPOV"}},
        "images.topview": {**good, "images": {**good["images"], "topview": np.zeros((8, 8, 3), np.float32)}},
        "state: expected shape": {**good, "state": np.zeros(5, np.float32)},
        "state: contains NaN": {**good, "state": np.full(39, np.nan, np.float32)},
        "instruction": {**good, "instruction": ""},
    }
    for field, obs in cases.items():
        with pytest.raises(ObservationError, match=field):
            policy.infer(obs)


def test_seeds(tmp_path):
    policy = Policy.load(make_debug_checkpoint(tmp_path / "a", seed=0, policy_version=1, embodiments=(mw.EMBODIMENT,)))
    obs = _obs(np.random.default_rng(0))
    a1, a2 = policy.infer(obs), policy.infer(obs)
    np.testing.assert_array_equal(a1["actions"], a2["actions"])
    assert not np.array_equal(a1["actions"], policy.infer({**obs, "seed": 8})["actions"])
    batch = policy.infer_batch([obs, {**obs, "seed": 8}])
    np.testing.assert_allclose(batch[0]["actions"], a1["actions"], atol=1e-5)


def test_think_generates_a_bounded_chain_of_thought(tmp_path):
    policy = Policy.load(make_debug_checkpoint(tmp_path / "ck", embodiments=(mw.EMBODIMENT,)))
    out = policy.infer({**_obs(np.random.default_rng(0)), "think": True})
    assert isinstance(out["cot"], str)
    n = len(policy._loaded.model.processor.tokenizer(out["cot"], add_special_tokens=False)["input_ids"])
    assert n <= policy.config.max_cot_tokens
    assert out["actions"].shape == (50, 4)
