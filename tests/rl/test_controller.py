"""The controller in process (no Ray): ablation switches change the batch; a crashed run resumes from state.json."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from rl_testlib import write_episode


from syvla.model.checkpoint import read_config, read_metadata, read_norm_stats, read_policy_version
from syvla.rl.advantages import AdvantageConfig
from syvla.rl.config import debug_rl_config
from syvla.rl.controller import STATE_FILE, RLController, RLWorkers, local_workers
from syvla.rl.fpo import FPOConfig
from syvla.rl.guidance import SampleRetriever, clip_encoder
from syvla.rl.metrics import METRICS_FILE
from syvla.rl.retrieval import RetrievalConfig
from syvla.rl.rollouts import RolloutCollector
from syvla.rl.value_trainer import ValueTrainer
from syvla.serving import replay_buffer as rb

SMALL = dict(rl_episodes=1, rollouts_per_episode=2, final_eval=False, collect_timeout_s=30, poll_s=0.01,
             value_warmup_steps=3, value_steps=2, value_batch_size=8, update_steps=1, minibatch_size=4,
             fpo=FPOConfig(n_mc=2))


class Robots:
    """on_collect: 'robots' run n episodes on the current version (written straight into the replay buffer)."""

    def __init__(self, replay: Path, fail_on: str | None = None):
        self.replay, self.fail_on, self.calls = replay, fail_on, []

    def __call__(self, label: str, version: int, n: int) -> None:
        if label == self.fail_on:
            raise RuntimeError("simulated crash")
        self.calls.append((label, version))
        with rb.ReplayWriter(self.replay, writer_id=f"robot-{label}-{len(self.calls)}") as w:
            for i in range(n):
                write_episode(w, version, n_steps=3, reward=i % 2, seed=100 * len(self.calls) + i,
                              uid=f"{len(self.calls):016x}{i:016x}")


class SpyLearners:
    def __init__(self):
        self.batches = []

    def update(self, batch):
        self.batches.append(batch)
        return {"clip_fraction": 0.0, "ratio_min": 1.0, "ratio_max": 1.0}

    def save(self, path, version):
        return path

    def load(self, ckpt):
        return read_policy_version(ckpt)

    def save_optimizer(self, path, version):
        return path


def _spy_run(tmp_path, ckpt, experts, name, **over):
    cfg = debug_rl_config(**{**SMALL, **over})
    replay = tmp_path / name / "replay"
    policy_cfg = read_config(ckpt)
    stats = read_norm_stats(ckpt)
    retriever = SampleRetriever(experts, clip_encoder(), cfg.retrieval, cfg.seed) if cfg.use_expert_data else None
    spy = SpyLearners()
    workers = RLWorkers(RolloutCollector(replay), retriever, ValueTrainer(cfg, policy_cfg, stats, experts), spy)
    state = RLController(cfg, workers, tmp_path / name / "run", ckpt, 0, policy_cfg, publish=lambda d, v: None,
                         on_collect=Robots(replay), log=lambda *a: None).run()
    return spy.batches[0], state, workers


def test_ablation_switches_change_the_batch(tmp_path, rl_ckpts, expert_set):
    k = 2
    full, s_full, w = _spy_run(tmp_path, rl_ckpts[0], expert_set, "all", retrieval=RetrievalConfig(k=k))
    assert full.summary()["rollout_rows"] == 6 and full.summary()["expert_rows"] == 6 * k
    assert (full.advantages[full.is_expert] == 1.0).all()  # §3.3: expert frames get A = 1.0
    assert np.abs(full.advantages[~full.is_expert]).max() <= 0.8  # App. A: clipped GAE

    none, s_none, _ = _spy_run(tmp_path, rl_ckpts[0], expert_set, "no_expert", use_expert_data=False)
    assert none.summary()["expert_rows"] == 0 and len(none) == 6  # "w/o Expert Dataset"
    assert np.isnan(s_none.metrics[0]["retrieval_similarity"])

    only, s_only, _ = _spy_run(tmp_path, rl_ckpts[0], expert_set, "expert_only", use_rollout_data=False,
                               retrieval=RetrievalConfig(k=k))  # the expert term alone
    assert only.is_expert.all() and len(only) == 6 * k and (only.advantages == 1.0).all()
    assert s_only.config["ablation"] == "expert frames only"

    rand, s_rand, _ = _spy_run(tmp_path, rl_ckpts[0], expert_set, "random",
                               retrieval=RetrievalConfig(k=k, mode="random"))  # "w/o Similar Sample"
    key = (lambda b: [s.state.tobytes() for s, e in zip(b.samples, b.is_expert) if e])
    assert key(rand) != key(full) and len(key(rand)) == len(key(full))
    assert s_rand.metrics[0]["retrieval_similarity"] < s_full.metrics[0]["retrieval_similarity"]

    gae, _, w_gae = _spy_run(tmp_path, rl_ckpts[0], expert_set, "expert_gae", value_steps=0,  # V stays as used
                             retrieval=RetrievalConfig(k=k), advantage=AdvantageConfig(expert_gae=True))
    ex_adv = gae.advantages[gae.is_expert]  # "w/ standard Advantage": the frames' own clipped GAE, not 1.0
    assert not np.allclose(ex_adv, 1.0) and np.abs(ex_adv).max() <= 0.8
    assert key(gae) == key(full)  # same retrieval, only the advantages differ
    rows = [int(np.flatnonzero([np.array_equal(s.state, x) for x in expert_set.states(range(len(expert_set)))])[0])
            for s, e in zip(gae.samples, gae.is_expert) if e]
    np.testing.assert_allclose(ex_adv, w_gae.value.expert_gae(rows), atol=1e-6)


def test_controller_resumes_from_its_state_after_a_crash(tmp_path, rl_ckpts, expert_set):
    cfg = debug_rl_config(**{**SMALL, "rl_episodes": 2, "final_eval": True})
    replay, run = tmp_path / "replay", tmp_path / "run"
    published = []

    def controller(robots):
        workers = local_workers(cfg, rl_ckpts[0], replay, expert_set)
        return RLController(cfg, workers, run, rl_ckpts[0], 0, read_config(rl_ckpts[0]),
                            publish=lambda d, v: published.append((v, d)), on_collect=robots, log=lambda *a: None)

    first = Robots(replay, fail_on="1")
    with pytest.raises(RuntimeError, match="simulated crash"):
        controller(first).run()  # crashes while collecting for RL episode 1
    saved = json.loads((run / STATE_FILE).read_text())
    assert (saved["episode"], saved["version"]) == (1, 1) and len(saved["consumed"]) == 2
    assert [v for v, _ in published] == [1]

    second = Robots(replay)
    second.calls = list(first.calls)  # new robot episodes get new ids
    resumed = controller(second)
    state = resumed.run()
    assert [v for v, _ in published] == [1, 1, 2]  # v1 re-published on resume, then v2
    assert second.calls[len(first.calls):] == [("1", 1), ("final", 2)]  # resumed at episode 1 on version 1
    assert (state.episode, state.version) == (2, 2) and len(state.metrics) == 2
    assert [m["version"] for m in state.metrics] == [0, 1]
    assert {v for ids in state.rollout_versions.values() for v in ids.values()} == {0, 1}
    assert len(set(state.consumed)) == len(state.consumed) == 6
    assert state.final["version"] == 2 and state.final["rollouts"] == 2
    v2 = read_metadata(state.checkpoints["2"])
    assert v2["rl"]["parent_version"] == 1  # the resumed learners continued from v1's weights
    assert read_policy_version(state.checkpoints["2"]) == 2
    assert resumed.workers.learners.learners[0].version == 2
    # AdamW went on from the state saved at v1 (restored on resume), not from an empty one
    steps = {int(s["step"]) for s in resumed.workers.learners.learners[0].opt.state.values()}
    assert steps == {2 * cfg.update_steps}
    assert torch_load(run / "optimizer.pt")["version"] == 2
    report = json.loads((run / METRICS_FILE).read_text())
    assert set(report["success_by_version"]) == {"0", "1", "2"}
    assert (run / "success_rate.png").stat().st_size > 0
    assert dataclasses.asdict(state)["warmup"]["value_warmup_steps"] == 3


def _observation(experts, row: int, seed: int) -> dict:
    s = experts.sample(row)
    return {"embodiment": "metaworld", "images": s.images, "state": s.state, "instruction": s.task, "seed": seed}


def test_null_update_publishes_the_base_policy_bit_for_bit(tmp_path, rl_ckpts, expert_set):
    """lr 0: the whole loop (rollouts, retrieval, K PPO steps, save, publish) leaves the policy as it was."""
    from syvla.model.checkpoint import load_checkpoint
    from syvla.model.policy import Policy

    cfg = debug_rl_config(**{**SMALL, "lr": 0.0, "update_steps": 2})
    replay, run = tmp_path / "replay", tmp_path / "run"
    workers = local_workers(cfg, rl_ckpts[0], replay, expert_set)
    exported = []
    state = RLController(cfg, workers, run, rl_ckpts[0], 0, read_config(rl_ckpts[0]), publish=lambda d, v: None,
                         on_collect=Robots(replay), log=lambda *a: None, on_episode=exported.append).run()
    assert state.version == 1 and state.metrics[0]["expert_rows"] > 0
    assert exported == state.metrics  # what an exporter (rl_metrics_exporter) receives, once per RL episode
    base, new = load_checkpoint(rl_ckpts[0])[0].state_dict(), load_checkpoint(state.checkpoints["1"])[0].state_dict()
    assert base.keys() == new.keys() and all(torch_equal(base[k], new[k]) for k in base)
    before, after = Policy.load(rl_ckpts[0]), Policy.load(state.checkpoints["1"])
    for row, seed in ((0, 7), (5, 8), (len(expert_set) - 1, 9)):
        a, b = before.infer(_observation(expert_set, row, seed)), after.infer(_observation(expert_set, row, seed))
        assert np.array_equal(a["actions"], b["actions"])  # bit for bit
        assert (a["policy_version"], b["policy_version"]) == (0, 1)


def torch_equal(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and torch.equal(a, b)


def torch_load(path):
    import torch

    return torch.load(path, weights_only=True)


def test_expert_only_update_imitates_the_expert_frames(tmp_path, rl_ckpts, expert_set):
    """use_rollout_data=False: the update is the expert term alone (A = 1), i.e. imitation of the retrieved
    frames. Through the whole loop, the published policy's sampled chunks on those frames move toward the
    expert's (same flow noise before and after), and nothing from the rollouts entered the batch."""
    from syvla.model.policy import Policy

    cfg = debug_rl_config(**{**SMALL, "use_rollout_data": False, "lr": 1e-3, "update_steps": 8, "minibatch_size": 8})
    replay, run = tmp_path / "replay", tmp_path / "run"
    workers = local_workers(cfg, rl_ckpts[0], replay, expert_set)
    state = RLController(cfg, workers, run, rl_ckpts[0], 0, read_config(rl_ckpts[0]), publish=lambda d, v: None,
                         on_collect=Robots(replay), log=lambda *a: None).run()
    assert state.metrics[0]["rollout_rows"] == 0 and state.metrics[0]["expert_rows"] > 0

    def error(policy) -> float:
        rows = range(0, len(expert_set), 3)
        errs = []
        for row in rows:
            s = expert_set.sample(row)
            got = policy.infer(_observation(expert_set, row, seed=row))["actions"]
            mask = np.asarray(s.action_mask, bool)
            errs.append(np.mean((got[mask] - np.asarray(s.actions)[mask]) ** 2))
        return float(np.mean(errs))

    before, after = error(Policy.load(rl_ckpts[0])), error(Policy.load(state.checkpoints["1"]))
    assert after < 0.9 * before, (before, after)  # 1.25 -> 1.07 (deterministic on CPU)
