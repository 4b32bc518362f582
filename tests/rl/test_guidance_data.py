"""The imitation set for RL: chunked frames, Monte-Carlo returns, LeRobot loading filtered on metadata,
and the retriever over it; plus the RL pipeline's configuration and policy choice."""

import dataclasses

import numpy as np
import pytest
from rl_testlib import CAMERAS, expert_table, model_samples

from syvla.data.lerobot import LeRobotWriteOptions, write_lerobot
from syvla.rl.guidance import ExpertSet, SampleRetriever, clip_encoder
from syvla.rl.retrieval import RetrievalConfig


def test_expert_set_chunks_episodes_and_gives_monte_carlo_returns(expert_set):
    assert len(expert_set) == 36 and expert_set.num_episodes == 3
    assert expert_set.bounds == [(0, 12), (12, 24), (24, 36)]
    assert expert_set.success.tolist() == [True, True, False]
    s = expert_set.sample(13)
    assert s.actions.shape == (50, 4) and s.action_mask.sum() == 11  # frame 1 of 12: 11 real steps
    ret = expert_set.monte_carlo_returns(gamma=0.9, stride=2)  # per-frame discount 0.9 ** 0.5
    assert ret[11] == pytest.approx(1.0) and ret[9] == pytest.approx(0.9)  # one decision before the end
    assert ret[0] == pytest.approx(0.9 ** 5.5, rel=1e-5) and np.all(ret[24:] == 0)  # the failed demo
    assert expert_set.decision_rows(5, 4).tolist() == [5, 9]
    views = expert_set.views([0, 11], CAMERAS, 16)
    assert views.shape == (2, 3, 16, 16, 3) and views[1].mean() > views[0].mean()  # shade grows with t


def test_load_lerobot_reads_only_the_chosen_tasks(tmp_path):
    tables = [expert_table(i, 6, seed=i, task="reach the red goal position" if i % 2 else "push the puck")
              for i in range(4)]
    root = write_lerobot(tables, tmp_path / "demos", LeRobotWriteOptions(video=False), dataset="metaworld")
    es = ExpertSet.load(root, chunk_len=50, tasks=("reach-v3",), max_episodes_per_task=1)
    assert es.num_episodes == 1 and len(es) == 6
    assert {es.sample(i).task for i in range(len(es))} == {"reach the red goal position"}
    assert ExpertSet.load(root, chunk_len=50).num_episodes == 4
    with pytest.raises(ValueError, match="no robot frames"):
        ExpertSet.load(root, chunk_len=50, tasks=("pick-place-v3",))


def test_retriever_finds_frames_of_similar_shade(expert_set):
    retriever = SampleRetriever(expert_set, clip_encoder(), RetrievalConfig(k=3))
    queries = expert_set.samples([0, 11])  # the darkest and the brightest frame of demo 0
    found = retriever.retrieve(queries)
    assert found.rows.shape == (2, 3) and found.scores.shape == (2, 3)
    assert 0 in found.rows[0] and 11 in found.rows[1]  # each frame is its own nearest neighbour
    assert np.all(np.diff(found.scores, axis=1) <= 1e-6)
    rand = SampleRetriever(expert_set, clip_encoder(), RetrievalConfig(k=3, mode="random"), seed=1)
    assert rand.retrieve(queries).mean_similarity < found.mean_similarity
    with pytest.raises(KeyError, match="no expert frames of embodiment"):
        retriever.retrieve([dataclasses.replace(model_samples(1)[0], embodiment="aloha")])
    with pytest.raises(ValueError, match="needs a local checkpoint"):
        clip_encoder("ViT-B-32")


def test_pipeline_flags_and_policy_choice(tmp_path):
    import importlib.util
    from pathlib import Path

    from syvla.model.policy import make_debug_checkpoint
    from syvla.sim import metaworld as mw
    from syvla.rl.launch import RLRunConfig, resolve_policy

    spec = importlib.util.spec_from_file_location("rl_pipeline", Path(__file__).parents[2] / "pipelines" / "rl.py")
    rl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rl)
    cfg, run, _ = rl.parse(["--retrieval.mode", "random", "--ablate_decoupling", "true", "--fpo.clip_eps", "0.1",
                         "--run.tasks", "reach-v3", "push-v3", "--run.robots", "3"])
    assert cfg.ablation == "w/o Similar Sample, w/o Intention Decoupling" and cfg.fpo.clip_eps == 0.1
    assert run.tasks == ("reach-v3", "push-v3") and run.robots == 3 and cfg.rl_episodes == 3
    with pytest.raises(SystemExit):
        rl.parse(["--rl_episodes", "11"])  # App. A: at most 10 RL episodes

    logs = []
    run = RLRunConfig(checkpoints_dir=str(tmp_path / "ckpt"), runs_dir=str(tmp_path / "runs"))
    path, version = resolve_policy(run, log=logs.append)  # nothing trained yet: a debug one, with a warning
    assert version == 0 and "UNTRAINED" in logs[-1] and path.parent == (tmp_path / "runs" / "rl-debug").resolve()
    make_debug_checkpoint(tmp_path / "ckpt" / "pretrain" / "pt", policy_version=5, embodiments=(mw.EMBODIMENT,))
    assert resolve_policy(run, log=logs.append)[1] == 5
    make_debug_checkpoint(tmp_path / "ckpt" / "finetune" / "ft", policy_version=7, embodiments=(mw.EMBODIMENT,))
    assert resolve_policy(run, log=logs.append) == ((tmp_path / "ckpt" / "finetune" / "ft").resolve(), 7)


def test_rl_pipeline_warns_of_an_untrained_retriever_and_names_a_bad_checkpoint(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("rl_pipeline", Path(__file__).parents[2] / "pipelines" / "rl.py")
    rl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rl)
    missing = str(tmp_path / "no-such-checkpoint")
    with pytest.raises(SystemExit, match=f"rl.py: RLRunConfig.checkpoint {missing} is not a policy checkpoint"):
        rl.main(["--run.checkpoint", missing])
    assert "WARNING: the retriever's CLIP is the untrained debug encoder" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        rl.main(["--run.checkpoint", missing, "--retrieval.mode", "random"])  # no retrieval: nothing to warn of
    assert "WARNING" not in capsys.readouterr().out
