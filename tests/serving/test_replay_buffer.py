"""Replay buffer: records read back, episodes joined, acknowledged records survive kill -9, torn tails skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from serving_testlib import make_obs

from syvla.serving import protocol as P
from syvla.serving import replay_buffer as rb


def step(episode: str, i: int, version: int = 0) -> dict:
    obs = make_obs(i)
    images = {c: (P.encode_png(v) if c == "corner2" else P.pack_array(v)) for c, v in obs["images"].items()}
    actions = np.full((50, 4), i, np.float32)
    return rb.step_record(episode, i, version, "metaworld", obs["instruction"], images, obs["state"], actions,
                          None, False, i)


def test_records_and_episodes_read_back(tmp_path):
    with rb.ReplayWriter(tmp_path, writer_id="a") as w:
        w.append({"kind": rb.KIND_EPISODE, "episode_id": "e1", "time": 1.0, "policy_version": 0,
                  "embodiment": "metaworld", "instruction": "pick"})
        w.append_many([step("e1", 1), step("e1", 0)])  # out of order on purpose
        w.append({"kind": rb.KIND_REWARD, "episode_id": "e1", "time": 5.0, "reward": 0})
    with rb.ReplayWriter(tmp_path, writer_id="b") as w:  # a second replica, own segment
        w.append({"kind": rb.KIND_REWARD, "episode_id": "e1", "time": 6.0, "reward": 1})
        w.append(step("e2", 0, version=1))
    reader = rb.ReplayReader(tmp_path)
    assert [p.name for p in reader.segments()] == ["a.000000.seg", "b.000000.seg"]
    assert sum(1 for _ in reader.records(kinds=[rb.KIND_STEP])) == 3 and reader.torn == []
    eps = reader.episodes()
    e1 = eps["e1"]
    assert (e1.policy_version, e1.embodiment, e1.instruction, e1.reward) == (0, "metaworld", "pick", 1)  # last reward wins
    assert [s["step"] for s in e1.steps] == [0, 1] and e1.policy_versions == {0}
    s0, obs0 = e1.steps[0], make_obs(0)
    for cam in obs0["images"]:  # PNG and raw payloads both decode to the pixels served
        np.testing.assert_array_equal(s0["images"][cam], obs0["images"][cam])
    np.testing.assert_array_equal(s0["state"], obs0["state"])
    assert s0["actions"].shape == (50, 4) and s0["actions"].dtype == np.float32
    assert eps["e2"].reward is None and eps["e2"].policy_version == 1


def test_segments_rotate_and_poll_follows(tmp_path):
    w = rb.ReplayWriter(tmp_path, writer_id="r", segment_bytes=20_000)
    reader = rb.ReplayReader(tmp_path)
    got, cursor = reader.poll()
    assert got == []
    for i in range(4):
        w.append(step("e", i))
    got, cursor = reader.poll(cursor)
    assert [r["step"] for r in got] == [0, 1, 2, 3]
    w.append(step("e", 4))
    got, cursor = reader.poll(cursor, decode=False)
    assert [r["step"] for r in got] == [4]
    assert len(reader.segments()) > 1  # each ~15 kB step overflowed the 20 kB segment
    w.close()


def test_torn_and_corrupt_tails_are_skipped(tmp_path):
    with rb.ReplayWriter(tmp_path, writer_id="t") as w:
        w.append_many([step("e", 0), step("e", 1)])
        path = w.path
    frame = rb.encode_frame(step("e", 2))
    good = path.stat().st_size
    for tail in (frame[:7], frame[:-1], frame[:12] + b"\0" * (len(frame) - 12)):  # header cut / payload cut / bad CRC
        with open(path, "r+b") as f:
            f.truncate(good)
            f.seek(good)
            f.write(tail)
        reader = rb.ReplayReader(tmp_path)
        assert [r["step"] for r in reader.records()] == [0, 1]
        assert reader.torn == [(path.name, good)]


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from syvla.serving import replay_buffer as rb
    w = rb.ReplayWriter(sys.argv[1], writer_id="victim")
    big = np.zeros(200_000, np.uint8).tobytes()  # ~200 kB records: a kill lands mid-write often
    i = 0
    while True:
        w.append({"kind": "step", "episode_id": "e", "step": i, "time": 0.0, "blob": big})
        sys.stdout.write(f"{i}\\n"); sys.stdout.flush()  # the acknowledgement, only after fsync
        i += 1
""")


def test_acknowledged_records_survive_kill9(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.getcwd()))
    acked = -1
    deadline = time.monotonic() + 60
    try:
        while acked < 30 and time.monotonic() < deadline:
            acked = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    acked = max(acked, max((int(line) for line in proc.stdout.read().split()), default=acked))
    assert acked >= 30, "writer too slow"
    # Simulate what a power cut adds on top of kill -9: half a frame at the end.
    seg = rb.ReplayReader(tmp_path).segments()[-1]
    with open(seg, "ab") as f:
        f.write(rb.encode_frame({"kind": "step", "episode_id": "e", "step": 10**6, "time": 0.0})[:9])
    reader = rb.ReplayReader(tmp_path)
    steps = [r["step"] for r in reader.records(decode=False)]
    assert steps[: acked + 1] == list(range(acked + 1))  # every acknowledged record, in order
    assert 10**6 not in steps and len(steps) <= acked + 2  # at most one written-but-unacked record
    assert len(reader.torn) == 1


def test_writer_never_reuses_a_segment_and_rejects_bad_ids(tmp_path):
    for _ in range(2):
        with rb.ReplayWriter(tmp_path, writer_id="x") as w:
            w.append(step("e", 0))
    assert [p.name for p in rb.ReplayReader(tmp_path).segments()] == ["x.000000.seg", "x.000001.seg"]
    with pytest.raises(ValueError, match="writer_id"):
        rb.ReplayWriter(tmp_path, writer_id="a/b")


def test_episode_assembly_from_records_in_any_order():
    """One assembly rule for the reader and the RL rollout buffer: start record, step order, last reward."""
    ep = rb.Episode("e")
    ep.add({"kind": rb.KIND_REWARD, "episode_id": "e", "time": 9.0, "reward": 1})
    ep.add({"kind": rb.KIND_STEP, "episode_id": "e", "step": 1, "time": 3.0, "policy_version": 2})
    ep.add({"kind": rb.KIND_STEP, "episode_id": "e", "step": None, "time": 1.0, "policy_version": 2})
    ep.add({"kind": rb.KIND_STEP, "episode_id": "e", "step": 0, "time": 2.0, "policy_version": 2})
    assert (ep.policy_version, ep.start_time) == (2, 3.0)  # no start record yet: the first step's
    ep.add({"kind": rb.KIND_REWARD, "episode_id": "e", "time": 8.0, "reward": 0})  # posted earlier: loses
    ep.add({"kind": rb.KIND_EPISODE, "episode_id": "e", "time": 0.5, "policy_version": 2, "embodiment": "metaworld",
            "instruction": "pick"})
    assert [s["step"] for s in ep.steps] == [0, 1, None] and ep.reward == 1
    assert (ep.start_time, ep.embodiment, ep.instruction) == (0.5, "metaworld", "pick")
