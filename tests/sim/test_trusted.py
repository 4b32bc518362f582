"""The held-out, paired evaluation RL figures are read from: layouts, pairing checks, the gain."""

import pytest

from syvla.intervals import SuccessRate
from syvla.rl.config import MAX_ROLLOUTS, MAX_RL_EPISODES
from syvla.rl.launch import RLRunConfig
from syvla.sim.trusted import EVAL_EPISODES, EVAL_SEED, check_disjoint, paired_gain, paired_outcomes, trusted_episodes


def _summary(outcomes, noise_offset=0, seed=EVAL_SEED):
    return {"results": [{"task": "push-v3", "seed": seed + k, "noise_seed": seed + k + noise_offset, "success": ok,
                         "aborted": None} for k, ok in enumerate(outcomes)]}


def test_evaluation_layouts_are_disjoint_from_every_rl_robot_layout():
    cfg = trusted_episodes("push-v3")
    assert (cfg.tasks, cfg.episodes, cfg.seed) == (("push-v3",), EVAL_EPISODES, EVAL_SEED) and EVAL_EPISODES >= 50
    rl_layouts = range(RLRunConfig().seed, RLRunConfig().seed + MAX_RL_EPISODES * MAX_ROLLOUTS + 1)
    check_disjoint(cfg, rl_layouts, "RL rollouts")  # the most a run at the paper's budget uses
    with pytest.raises(ValueError, match=r"training demos use evaluation layout seeds \[100003\]"):
        check_disjoint(cfg, [5, EVAL_SEED + 3], "training demos")


def test_paired_gain_counts_layouts_gained_and_lost():
    before = _summary([True, False, False, True, False])
    after = _summary([True, True, True, False, False])
    g = paired_gain(before, after)
    assert (g["n"], g["a_only"], g["b_only"]) == (5, 1, 2)
    assert g["gain_points"] == pytest.approx(20.0)
    assert SuccessRate.from_dict(g["b"]) == SuccessRate(3, 5)


def test_unpaired_evaluations_are_refused():
    with pytest.raises(ValueError, match="different flow noise"):
        paired_outcomes(_summary([True, False]), _summary([True, False], noise_offset=1))
    with pytest.raises(ValueError, match="different episodes"):
        paired_outcomes(_summary([True, False]), _summary([True, False], seed=EVAL_SEED + 1))


def test_success_rate_dict_round_trip():
    r = SuccessRate(17, 50)
    assert SuccessRate.from_dict(r.to_dict()) == r
    assert SuccessRate.from_dict({**r.to_dict(), "rate": 0.99}) == r  # derived values are recomputed
