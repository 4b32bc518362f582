"""Open-loop evaluation on a held-out prepared root (`evaluate.py --heldout_data`): any robot, no simulator."""

import pytest
from train_helpers import CHUNK, EMBODIMENT, synthetic_table, write_prepared

from syvla.model.config import ActionExpertConfig, EmbodimentConfig, debug_config
from syvla.model.policy import make_debug_checkpoint
from syvla.sim.episodes import EpisodeConfig
from syvla.sim.evaluate import EvalConfig, evaluate


def test_heldout_data_scores_each_robot_dataset_against_the_mean_action_baseline(tmp_path):
    held = tmp_path / "held"
    write_prepared(held, {"synthetic": synthetic_table(episodes=3, frames=10)})  # 30 rows
    model = debug_config(embodiments=(EMBODIMENT,), expert=ActionExpertConfig(chunk_len=CHUNK), num_query_tokens=4)
    ckpt = make_debug_checkpoint(tmp_path / "ckpt", cfg=model)
    lines = []
    out = evaluate(EvalConfig(checkpoint=str(ckpt), heldout_data=str(held), heldout_frames=16),
                   EpisodeConfig(episodes=0), log=lines.append)
    assert "closed_loop" not in out and list(out["open_loop"]) == ["synthetic"]
    r = out["open_loop"]["synthetic"]
    assert r["frames"] == 16 and r["policy_mse"] > 0 and r["baseline_mse"] > 0
    assert r["ratio"] == pytest.approx(r["policy_mse"] / r["baseline_mse"])
    assert any("synthetic open loop over 16 held-out frames" in line for line in lines)
    again = evaluate(EvalConfig(checkpoint=str(ckpt), heldout_data=str(held), heldout_frames=16),
                     EpisodeConfig(episodes=0), log=lines.append)
    assert again["open_loop"] == out["open_loop"]  # same frames, same noise

    other = make_debug_checkpoint(tmp_path / "other", cfg=debug_config(
        embodiments=(EmbodimentConfig("arm", 3, 2, ("cam",)),), expert=ActionExpertConfig(chunk_len=CHUNK)))
    with pytest.raises(ValueError, match=r"held-out dataset 'synthetic' .* checkpoint does not know \(it knows \['arm'\]\)"):
        evaluate(EvalConfig(checkpoint=str(other), heldout_data=str(held)), EpisodeConfig(episodes=0))


def test_an_api_key_without_an_endpoint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="api_key is for an endpoint"):
        EvalConfig(checkpoint=str(tmp_path), api_key="k")
    assert EvalConfig(endpoint="http://127.0.0.1:8000", api_key="k").api_key == "k"
