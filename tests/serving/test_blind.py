"""Blind evaluation: the schedule is balanced, and nothing a robot or an operator sees names the policy (no Ray)."""

from __future__ import annotations

import json
import re

import msgpack
import pytest
from fastapi.testclient import TestClient
from serving_testlib import act_body, make_obs

from syvla.client import PolicyClient
from syvla.serving import protocol as P
from syvla.serving import replay_buffer as rb
from syvla.serving.app import create_app
from syvla.serving.blind import BlindSchedule, unblind
from syvla.serving.config import ServeConfig
from syvla.serving.host import PolicyHost

pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")

# What must never reach a robot or the operator: the checkpoints' own version stamps, their names.
STAMPS = (73019, 84027)
NAMES = ("arm-alpha-ckpt", "arm-beta-ckpt")


def test_schedule_blocks_are_permutations_and_every_prefix_is_balanced():
    sched = BlindSchedule([0, 1, 2], seed=5)
    for group in ("push", "door"):
        got = [sched.assign(group) for _ in range(30)]
        versions = [a.version for a in got]
        for b in range(10):
            assert sorted(versions[3 * b: 3 * b + 3]) == [0, 1, 2]  # each block of K holds every arm once
            assert [a.block for a in got[3 * b: 3 * b + 3]] == [b] * 3 and [a.slot for a in got[3 * b: 3 * b + 3]] == [0, 1, 2]
        for n in range(1, 31):
            counts = [versions[:n].count(v) for v in range(3)]
            assert max(counts) - min(counts) <= 1
        assert len({tuple(versions[3 * b: 3 * b + 3]) for b in range(10)}) > 1  # the order is random, not fixed
    again, other = BlindSchedule([0, 1, 2], seed=5), BlindSchedule([0, 1, 2], seed=6)
    assert [again.assign("door").version for _ in range(30)] == versions  # groups are independent, seeded
    assert [other.assign("door").version for _ in range(30)] != versions
    with pytest.raises(ValueError, match="at least 2 arms"):
        BlindSchedule([4], seed=0)


def test_blind_config_errors_name_the_field():
    for kwargs, match in (({"blind_checkpoints": ("a",), "weight_poll_s": 0}, "at least 2"),
                          ({"blind_checkpoints": ("a", "a"), "weight_poll_s": 0}, "at least 2 different"),
                          ({"blind_checkpoints": ("a", "b")}, "weight_poll_s must be 0"),
                          ({"blind_checkpoints": ("a", "b", "c"), "weight_poll_s": 0}, "keep_versions"),
                          ({"blind_checkpoints": ("a", "b"), "weight_poll_s": 0, "checkpoint": "c"}, "exclude"),
                          ({"checkpoint": "c", "blind_min_ms": 100}, "blind servers only")):
        with pytest.raises(ValueError, match=match):
            ServeConfig(**kwargs)


@pytest.fixture(scope="module")
def blind(tmp_path_factory):
    from syvla.model.policy import make_debug_checkpoint
    from syvla.sim import metaworld as mw

    root = tmp_path_factory.mktemp("blind")
    ckpts = [str(make_debug_checkpoint(root / name, seed=i, policy_version=stamp, embodiments=(mw.EMBODIMENT,)))
             for i, (name, stamp) in enumerate(zip(NAMES, STAMPS))]
    cfg = ServeConfig(blind_checkpoints=tuple(ckpts), blind_seed=11, weight_poll_s=0, replay_dir=str(root / "replay"))
    host = PolicyHost(cfg, replay=rb.ReplayWriter(cfg.replay_dir, writer_id="blind"))
    host.load_blind()
    with TestClient(create_app(host)) as http:
        yield host, http, ckpts


def _texts(resp) -> str:
    if resp.headers.get("content-type", "").startswith("application/msgpack"):
        return json.dumps(msgpack.unpackb(resp.content), default=lambda b: b.hex() if isinstance(b, bytes) else str(b))
    return resp.text


def test_nothing_the_robot_or_the_operator_sees_names_the_policy(blind):
    host, http, ckpts = blind
    seen = []  # every body a robot or the operator page received
    for encoding in ("msgpack", "json"):
        c = PolicyClient("http://testserver", encoding=encoding, http=http)
        for k in range(4):
            r = http.post("/v1/episodes", json={"instruction": "push the puck"})
            seen.append(r.text)
            eid = r.json()["episode_id"]
            assert set(r.json()) == {"episode_id"} and not re.search(r"-v\d+-", eid)
            obs = make_obs(k)
            c.episode_id, c.step = eid, 0
            for _ in range(2):
                out = c.act(obs["images"], obs["state"], "push the puck", seed=k)
                assert out.policy_version is None and out.timing == {}
            act = http.post("/v1/act", content=P.encode(act_body(eid, obs, seed=k), P.MSGPACK),
                            headers={"content-type": "application/msgpack"})
            assert act.status_code == 200
            seen.append(_texts(act))
    listing = http.get("/operator/api/episodes")
    assert listing.status_code == 200 and len(listing.json()["episodes"]) == 8
    seen += [listing.text, http.get("/operator").text, http.get("/v1/metadata").text, http.get("/healthz").text]
    everything = "\n".join(seen)
    for secret in (*map(str, STAMPS), *NAMES, *ckpts, "policy_version", "timing", "infer_ms", "versions_held"):
        assert secret not in everything, secret
    for ep in listing.json()["episodes"]:
        assert set(ep) == {"episode_id", "label", "instruction", "embodiment", "steps", "frames", "cameras",
                           "age_s", "running"}

    # The replay buffer keeps the truth: versions 0/1 by the schedule (4 each), and the report un-blinds it.
    episodes = rb.ReplayReader(host.config.replay_dir).episodes(decode=False)
    assert sorted(e.policy_version for e in episodes.values()) == [0] * 4 + [1] * 4
    assert all(s["policy_version"] == e.policy_version for e in episodes.values() for s in e.steps)
    for e in episodes.values():
        http.post("/operator/api/label", json={"episode_id": e.episode_id, "reward": int(e.policy_version == 1)})
    report = unblind(rb.ReplayReader(host.config.replay_dir).episodes(decode=False).values(), NAMES)
    assert [(a["checkpoint"], a["success"]["successes"], a["success"]["n"]) for a in report["arms"]] == \
        [(NAMES[0], 0, 4), (NAMES[1], 4, 4)]
    assert [s["slot"] for s in report["schedule"]] == [0, 1] * 4


def test_blind_ids_verify_only_on_their_server(blind):
    host, http, _ = blind
    eid = http.post("/v1/episodes", json={}).json()["episode_id"]
    assert host.episode_version(eid) in (0, 1)
    uid, tag = eid[3:35], eid[36:]
    flipped = f"ep-{uid}-{tag[:-1]}{'0' if tag[-1] != '0' else '1'}"
    for forged in (flipped, f"ep-{'0' * 32}-{tag}", P.make_episode_id(uid, 0, b"other key", blind=True)):
        r = http.post(f"/v1/episodes/{forged}/reward", json={"reward": 1})
        assert r.status_code == 404, forged
    # A plain server with the same secret still refuses the blind form (it checks no versions).
    assert P.parse_episode_id(P.make_episode_id(uid, 1, b"k", blind=True), b"k", versions=[0, 1]) == 1
    with pytest.raises(P.ProtocolError):
        P.parse_episode_id(P.make_episode_id(uid, 1, b"k", blind=True), b"k")


def test_a_latency_floor_makes_every_arm_answer_alike(blind):
    """With blind_min_ms, no act answer comes back sooner, whichever arm served it."""
    import time

    _, _, ckpts = blind
    cfg = ServeConfig(blind_checkpoints=tuple(ckpts), blind_seed=1, weight_poll_s=0, blind_min_ms=400.0, replay_dir="")
    host = PolicyHost(cfg)
    host.load_blind()
    with TestClient(create_app(host)) as http:
        c = PolicyClient("http://testserver", http=http)
        obs = make_obs(0)
        for _ in range(4):  # two blocks of the schedule: both arms
            c.start_episode()
            t0 = time.perf_counter()
            c.act(obs["images"], obs["state"], obs["instruction"], seed=0)
            assert time.perf_counter() - t0 >= 0.4
