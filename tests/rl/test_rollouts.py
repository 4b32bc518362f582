"""Rollout assembly from the serving replay buffer: trajectories, skipped episodes, per-step samples."""

import numpy as np
import pytest
from rl_testlib import ACTION_DIM, CAMERAS, CHUNK, STATE_DIM, TASK, write_episode

from syvla.rl.rollouts import RolloutCollector, rollout_steps
from syvla.serving import replay_buffer as rb


def test_assembles_rewarded_episodes_and_reports_the_rest(tmp_path):
    with rb.ReplayWriter(tmp_path, writer_id="a") as w:
        ok = write_episode(w, version=3, n_steps=4, reward=1, seed=1)
        fail = write_episode(w, version=3, n_steps=2, reward=0, seed=2)
        running = write_episode(w, version=3, n_steps=3, reward=None, seed=3)
        old = write_episode(w, version=2, n_steps=2, reward=1, seed=4)
        mixed = write_episode(w, version=3, n_steps=2, reward=1, seed=5, step_versions=[3, 2])
    c = RolloutCollector(tmp_path)
    c.poll()
    got = c.take(n=10, min_version=3)
    assert [t.episode_id for t in got.trajectories] == [ok, fail]  # oldest first
    assert got.waiting_for_reward == [running] and got.stale == [old] and list(got.invalid) == [mixed]
    assert "mixed policy versions [2, 3]" in got.invalid[mixed]
    assert got.success_rate == 0.5
    traj = got.trajectories[0]
    assert (traj.policy_version, traj.reward, len(traj), traj.instruction) == (3, 1, 4, TASK)
    np.testing.assert_array_equal(traj.rewards(), [0, 0, 0, 1])
    s = traj.samples()[0]
    assert set(s.images) == set(CAMERAS) and s.images["corner2"].dtype == np.uint8
    assert s.state.shape == (STATE_DIM,) and s.actions.shape == (CHUNK, ACTION_DIM)
    assert s.action_mask.all() and s.embodiment == "metaworld" and s.kind == "robot"
    # handed out once; a reward arriving later makes the running episode available
    assert c.take(10, 3).trajectories == []
    with rb.ReplayWriter(tmp_path, writer_id="a") as w:
        w.append({"kind": rb.KIND_REWARD, "episode_id": running, "time": 1e12, "reward": 0})
    c.poll()
    assert [t.episode_id for t in c.take(10, 3).trajectories] == [running]


def test_steps_carry_zero_rewards_but_the_last(tmp_path):
    with rb.ReplayWriter(tmp_path, writer_id="a") as w:
        write_episode(w, version=0, n_steps=3, reward=1, seed=1)
        write_episode(w, version=0, n_steps=2, reward=0, seed=2)
    got = RolloutCollector(tmp_path).collect(2, 0, timeout_s=5, poll_s=0.01)
    steps = rollout_steps(got.trajectories)
    assert len(steps) == 5 and steps.bounds == [(0, 3), (3, 5)]
    np.testing.assert_array_equal(steps.rewards, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(steps.versions, [0] * 5)


def test_forget_and_timeout(tmp_path):
    with rb.ReplayWriter(tmp_path, writer_id="a") as w:
        eid = write_episode(w, version=0, n_steps=1, reward=1, seed=1)
    c = RolloutCollector(tmp_path)
    c.forget([eid])  # consumed before a restart: never handed out again
    with pytest.raises(TimeoutError, match="only 0 of the 1"):
        c.collect(1, 0, timeout_s=0.05, poll_s=0.01)
    with rb.ReplayWriter(tmp_path, writer_id="b") as w:
        write_episode(w, version=0, n_steps=1, reward=0, seed=9)
    got = c.collect(5, 0, timeout_s=0.05, min_rollouts=1, poll_s=0.01)  # fewer than n after the timeout
    assert len(got.trajectories) == 1 and got.report()["rollouts"] == 1


def test_score_steps_masks_the_unexecuted_tail(tmp_path):
    with rb.ReplayWriter(tmp_path, writer_id="a") as w:
        write_episode(w, version=0, n_steps=2, reward=1, seed=1)
    got = RolloutCollector(tmp_path).collect(1, 0, timeout_s=5, poll_s=0.01)
    steps = rollout_steps(got.trajectories, score_steps=10)
    assert [s.action_mask.sum() for s in steps.samples] == [10, 10]
    assert steps.samples[0].action_mask[:10].all() and steps.samples[0].actions.shape == (CHUNK, ACTION_DIM)
