"""The FastAPI app in-process (no Ray) around the real debug `Policy`: the HTTP contract end to end."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_testlib import ACTION_DIM, CAMERAS, CHUNK, act_body, make_obs

from syvla.client import PolicyClient, PolicyServerError
from syvla.model.policy import Policy
from syvla.serving import protocol as P
from syvla.serving import replay_buffer as rb
from syvla.serving.app import create_app
from syvla.serving.config import ServeConfig
from syvla.serving.host import PolicyHost

API_KEY = "s3cret"
# PolicyClient passes per-request timeouts, which Starlette's TestClient ignores with a warning.
pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")


def make_server(tmp_path, ckpt, **config):
    cfg = ServeConfig(checkpoint=str(ckpt), version=0, replay_dir=str(tmp_path / "replay"), **config)
    host = PolicyHost(cfg, replay=rb.ReplayWriter(cfg.replay_dir, writer_id="test"))
    host.load_version(cfg.version, cfg.checkpoint)
    return host, TestClient(create_app(host))


@pytest.fixture(scope="module")
def server(tmp_path_factory, debug_ckpts):
    tmp = tmp_path_factory.mktemp("app")
    host, http = make_server(tmp, debug_ckpts[0], api_key=API_KEY, max_body_bytes=300_000)
    with http:
        yield host, http


def client(http, encoding, **kw):
    kw.setdefault("api_key", API_KEY)
    return PolicyClient("http://testserver", encoding=encoding, http=http, **kw)


@pytest.mark.parametrize("encoding,image_format", [("msgpack", "raw"), ("msgpack", "png"), ("json", "png"),
                                                   ("json", "raw")])
def test_act_matches_in_process_policy(server, debug_ckpts, encoding, image_format):
    host, http = server
    c = client(http, encoding, image_format=image_format)
    assert c.metadata()["embodiments"]["metaworld"]["cameras"] == list(CAMERAS)
    episode = c.start_episode(instruction="pick up the puck")
    obs = make_obs(3)
    out = c.act(obs["images"], obs["state"], obs["instruction"], seed=11)
    assert out.actions.shape == (CHUNK, ACTION_DIM) and out.actions.dtype == np.float32
    assert (out.policy_version, out.latest_policy_version, out.episode_id, out.step) == (0, 0, episode, 0)
    assert {"queue_ms", "infer_ms", "replay_ms", "server_ms", "batch_size"} <= set(out.timing)
    expected = Policy.load(debug_ckpts[0]).infer({**obs, "embodiment": "metaworld", "seed": 11})["actions"]
    np.testing.assert_allclose(out.actions, expected, rtol=1e-5, atol=1e-6)  # same model, same noise
    assert c.act(obs["images"], obs["state"], obs["instruction"], seed=11).step == 1


def test_concurrent_robots_share_batches(server, debug_ckpts):
    """8 robots at once over real sockets (uvicorn). With one TestClient shared by the 8 threads, two threads
    of the test process spun for minutes on 2 cores (seen twice, cause not pinned down)."""
    import concurrent.futures as cf

    from serving_testlib import uvicorn_server

    host, _ = server
    policy = Policy.load(debug_ckpts[0])
    with uvicorn_server(create_app(host)) as (url, _port):
        with cf.ThreadPoolExecutor(8) as pool:
            sizes = list(pool.map(lambda i: _robot(url, policy, i), range(8)))
    assert max(sizes) > 1, sizes


def _robot(url, policy, i):
    with PolicyClient(url, api_key=API_KEY, encoding="msgpack") as c:
        c.start_episode()
        obs = make_obs(10 + i)
        out = c.act(obs["images"], obs["state"], obs["instruction"], seed=i)
        expected = policy.infer({**obs, "embodiment": "metaworld", "seed": i})["actions"]
        np.testing.assert_allclose(out.actions, expected, rtol=1e-4, atol=1e-5)  # batched = alone
        return out.timing["batch_size"]


def test_replay_records_what_was_served(server):
    host, http = server
    c = client(http, "msgpack")
    episode = c.start_episode(embodiment="metaworld", instruction="open the drawer")
    served = [c.act(make_obs(i)["images"], make_obs(i)["state"], "open the drawer", seed=i).actions for i in range(3)]
    c.post_reward(1)
    ep = rb.ReplayReader(host.config.replay_dir).episodes()[episode]
    assert (ep.reward, ep.policy_version, ep.instruction, ep.embodiment) == (1, 0, "open the drawer", "metaworld")
    assert [s["step"] for s in ep.steps] == [0, 1, 2]
    for s, actions, i in zip(ep.steps, served, range(3)):
        np.testing.assert_array_equal(s["actions"], actions)
        np.testing.assert_array_equal(s["images"]["topview"], make_obs(i)["images"]["topview"])
        assert (s["seed"], s["policy_version"]) == (i, 0)


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_real_time_chunking_request_is_inpainted_and_recorded(server, debug_ckpts, encoding):
    """An act with the committed prefix and delay answers what Policy.infer answers for them, and the
    replay step keeps the prefix and delay (RL scores what was executed); bad prefixes are 422 by name."""
    host, http = server
    c = client(http, encoding)
    episode = c.start_episode()
    obs = make_obs(4)
    old = c.act(obs["images"], obs["state"], obs["instruction"], seed=1).actions
    prefix = old[10:]
    out = c.act(obs["images"], obs["state"], obs["instruction"], seed=2, prefix_actions=prefix, prefix_delay=5)
    expected = Policy.load(debug_ckpts[0]).infer({**obs, "embodiment": "metaworld", "seed": 2,
                                                  "prefix_actions": prefix, "prefix_delay": 5})["actions"]
    np.testing.assert_allclose(out.actions, expected, rtol=1e-4, atol=1e-5)
    steps = rb.ReplayReader(host.config.replay_dir).episodes()[episode].steps
    assert "prefix_actions" not in steps[0]
    np.testing.assert_array_equal(steps[1]["prefix_actions"], prefix)
    assert steps[1]["prefix_delay"] == 5
    for bad, field in (({"prefix_actions": np.zeros((5, 3), np.float32).tolist()}, "prefix_actions"),
                       ({"prefix_actions": np.zeros((5, 4), np.float32).tolist(), "prefix_delay": 6}, "prefix_delay"),
                       ({"prefix_delay": 2}, "prefix_delay"),
                       ({"prefix_actions": np.zeros((60, 4), np.float32).tolist()}, "prefix_actions")):
        body = {**act_body(episode, obs), **bad}
        with pytest.raises(PolicyServerError) as err:
            client(http, "msgpack")._call("POST", "/v1/act", body)
        assert (err.value.status, err.value.field) == (422, field), (bad, err.value)


def test_auth_size_limit_and_errors(server):
    host, http = server
    assert http.get("/healthz").json() == {"status": "ok", "policy_version": 0}  # health needs no key
    assert http.get("/v1/metadata").status_code == 401
    assert http.get("/v1/metadata", headers={"authorization": f"Bearer {API_KEY}"}).status_code == 200
    with pytest.raises(PolicyServerError) as err:
        PolicyClient("http://testserver", api_key="wrong", http=http).start_episode()
    assert (err.value.status, err.value.field) == (401, "x-api-key")
    key = {"x-api-key": API_KEY, "content-type": "application/json"}
    big = json.dumps({"pad": "x" * 400_000})
    assert http.post("/v1/act", content=big, headers=key).status_code == 413
    chunks = (b"x" * 100_000 for _ in range(4))  # chunked: no content-length to check up front
    assert http.post("/v1/act", content=chunks, headers=key).status_code == 413
    assert http.post("/v1/act", content=b"{}", headers={**key, "content-type": "text/plain"}).status_code == 415
    c = client(http, "json")
    c.start_episode()
    obs = make_obs(0)
    with pytest.raises(PolicyServerError) as err:
        c.act({"corner2": obs["images"]["corner2"]}, obs["state"], "pick")
    assert (err.value.status, err.value.field) == (422, "images.topview")
    with pytest.raises(ValueError, match="images.corner2: expected uint8"):  # the client refuses before sending
        c.act({**obs["images"], "corner2": obs["images"]["corner2"] / 255.0}, obs["state"], "pick")
    with pytest.raises(ValueError, match="state: must be finite"):
        c.act(obs["images"], np.full(39, np.nan), "pick")
    body = {"episode_id": c.episode_id, "embodiment": "metaworld", "instruction": "pick", "state": [np.nan] * 39,
            "images": {k: P.pack_array(v) for k, v in obs["images"].items()}}
    r = http.post("/v1/act", content=msgpack.packb(body), headers={**key, "content-type": "application/msgpack"})
    assert r.status_code == 422 and msgpack.unpackb(r.content)["error"]["field"] == "state[0]"
    # A msgpack request may ask for a JSON reply, and errors follow the negotiated encoding.
    r = http.post("/v1/episodes", content=msgpack.packb({"embodiment": "nope"}),
                  headers={**key, "content-type": "application/msgpack", "accept": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "embodiment"


def test_server_deadline(server):
    host, http = server
    c = client(http, "msgpack")
    c.start_episode()
    obs = make_obs(0)
    body = {"episode_id": c.episode_id, "embodiment": "metaworld", "state": obs["state"].tolist(),
            "images": {k: P.pack_array(v) for k, v in obs["images"].items()}, "instruction": "x",
            "deadline_ms": 1e-6}
    r = http.post("/v1/act", content=msgpack.packb(body),
                  headers={"x-api-key": API_KEY, "content-type": "application/msgpack"})
    assert r.status_code == 504 and msgpack.unpackb(r.content)["error"]["field"] == "deadline_ms"


def test_episodes_stay_on_their_pinned_version(tmp_path, debug_ckpts):
    host, http = make_server(tmp_path, debug_ckpts[0], keep_versions=2)
    c_old, c_new = client(http, "msgpack", api_key=None), client(http, "msgpack", api_key=None)
    c_old.start_episode()
    obs = {**make_obs(1), "embodiment": "metaworld", "seed": 5}
    before = c_old.act(obs["images"], obs["state"], obs["instruction"], seed=5)
    host.load_version(1, str(debug_ckpts[1]))  # an update lands mid-episode
    during = c_old.act(obs["images"], obs["state"], obs["instruction"], seed=5)
    assert (during.policy_version, during.latest_policy_version) == (0, 1)
    np.testing.assert_array_equal(during.actions, before.actions)  # still version 0's weights
    c_new.start_episode()
    new = c_new.act(obs["images"], obs["state"], obs["instruction"], seed=5)
    assert new.policy_version == 1
    np.testing.assert_allclose(new.actions, Policy.load(debug_ckpts[1]).infer(obs)["actions"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(new.actions, before.actions)
    host.load_version(2, str(debug_ckpts[1]))  # version 0 falls out of the two kept
    with pytest.raises(PolicyServerError) as err:
        c_old.act(obs["images"], obs["state"], obs["instruction"])
    assert (err.value.status, err.value.field) == (409, "episode_id")
    assert host.versions == [1, 2] and not host.load_version(0, str(debug_ckpts[0]))  # stale publish ignored
    eps = rb.ReplayReader(tmp_path / "replay").episodes()
    assert eps[c_old.episode_id].policy_versions == {0} and eps[c_new.episode_id].policy_versions == {1}


# ---------------------------------------------------------------- fuzz: malformed bodies never give a 5xx

def _valid_body(episode_id: str) -> dict:
    obs = make_obs(0, side=8)
    return {"episode_id": episode_id, "embodiment": "metaworld", "instruction": "pick",
            "images": {k: P.pack_array(v) for k, v in obs["images"].items()}, "state": obs["state"].tolist()}


leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                   st.text(max_size=20), st.binary(max_size=40))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=12)
FIELDS = ["episode_id", "embodiment", "instruction", "images", "state", "think", "seed", "step", "deadline_ms",
          "images.corner2", "images.topview", "images.corner2.dtype", "images.corner2.shape", "images.corner2.data",
          "state.0"]


def mutate(body: dict, path: str, value, delete: bool) -> dict:
    body = json.loads(json.dumps(body, default=lambda b: {"__b": b.hex()}), object_hook=lambda d: bytes.fromhex(
        d["__b"]) if set(d) == {"__b"} else d)  # deep copy keeping bytes
    *parents, last = path.split(".")
    node = body
    for p in parents:
        node = node[p] if isinstance(node, dict) else node[int(p)]
    key = int(last) if isinstance(node, list) else last
    if delete and isinstance(node, dict):
        node.pop(key, None)
    else:
        node[key] = value
    return body


def encode_any(obj, encoding: str) -> bytes:
    if encoding == "msgpack":
        return msgpack.packb(obj, use_bin_type=True)
    return json.dumps(obj, default=lambda b: b.hex() if isinstance(b, bytes) else str(b)).encode()


def check_no_5xx(http, content: bytes, content_type: str) -> None:
    r = http.post("/v1/act", content=content, headers={"content-type": content_type})
    assert r.status_code < 500, (r.status_code, r.content[:300])


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, debug_ckpts):
    host, http = make_server(tmp_path_factory.mktemp("fuzz"), debug_ckpts[0], max_image_side=64)
    with http:
        episode = http.post("/v1/episodes").json()["episode_id"]
        yield http, episode


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(FIELDS), value=values, delete=st.booleans(), encoding=st.sampled_from(["msgpack", "json"]))
def test_fuzz_mutated_bodies_get_4xx_not_5xx(open_server, path, value, delete, encoding):
    http, episode = open_server
    body = mutate(_valid_body(episode), path, value, delete)
    check_no_5xx(http, encode_any(body, encoding), P.CONTENT_TYPES[encoding])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200) | values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
       content_type=st.sampled_from(["application/json", "application/msgpack", "", "text/plain"]))
def test_fuzz_random_bodies_get_4xx_not_5xx(open_server, raw, content_type):
    http, _ = open_server
    check_no_5xx(http, raw, content_type)


class ScriptedRobot:
    """Stands in for SimRobot (same interface); `on_step` runs after each executed chunk."""

    instruction = "reach the goal"

    def __init__(self, on_step, chunks_to_success: int):
        self.on_step, self.chunks_to_success, self.left, self.steps = on_step, chunks_to_success, 0, 0

    def reset(self, task, seed):
        self.steps, self.left = 0, self.chunks_to_success
        return {k: v for k, v in make_obs(seed).items() if k != "instruction"}

    def step_chunk(self, actions):
        self.steps += len(actions)
        self.left -= 1
        self.on_step()
        return {k: v for k, v in make_obs(self.steps).items() if k != "instruction"}, self.left == 0, self.left == 0


def test_endpoint_episode_posts_reward_or_aborts_when_its_version_is_retired(tmp_path, debug_ckpts):
    from syvla.sim.episodes import EpisodeConfig, ServedPolicy, run_episode, summarize

    host, http = make_server(tmp_path, debug_ckpts[0], keep_versions=1)
    cfg = EpisodeConfig(execute_steps=10)
    c = ServedPolicy(client(http, "msgpack", api_key=None))
    ok = run_episode(c, ScriptedRobot(lambda: None, chunks_to_success=2), "reach-v3", 0, cfg)
    assert (ok.success, ok.chunks, ok.steps, ok.aborted) == (True, 2, 20, None)
    retire = ScriptedRobot(lambda: host.load_version(host.current_version + 1, str(debug_ckpts[1])), 3)
    gone = run_episode(c, retire, "reach-v3", 1, cfg)
    assert gone.aborted and gone.chunks == 1 and not gone.success
    eps = rb.ReplayReader(tmp_path / "replay").episodes(decode=False)
    assert eps[ok.episode_id].reward == 1 and eps[gone.episode_id].reward is None
    summary = summarize([ok, gone])
    assert (summary["success_rate"], summary["episodes"], summary["aborted"]) == (1.0, 1, 1)


def test_replay_failure_refuses_acts_and_fails_health(tmp_path, debug_ckpts):
    host, http = make_server(tmp_path, debug_ckpts[0])
    c = client(http, "msgpack", api_key=None, deadline=1.0)  # 503 is retried until the deadline
    c.start_episode()
    host.replay._file.close()  # the disk goes away under the writer
    obs = make_obs(0)
    with pytest.raises(PolicyServerError) as err:
        c.act(obs["images"], obs["state"], obs["instruction"])
    assert err.value.status == 503 and "not recorded" in err.value.message  # never acknowledged unrecorded
    health = http.get("/healthz")
    assert health.status_code == 503 and "replay buffer failed" in health.json()["status"]


def test_vlm_every_reuses_the_episodes_feature_query_states(tmp_path, debug_ckpts):
    """vlm_every = 3: calls 0, 3, 6 run the VLM, the calls between reuse its states (answers say which call
    produced them, and equal Policy.infer_batch given those states); a new instruction runs it at once."""
    host, http = make_server(tmp_path, debug_ckpts[0], vlm_every=3)
    policy = Policy.load(debug_ckpts[0])
    with http:
        c = client(http, "msgpack", api_key=None)
        episode = c.start_episode()
        got, cached = [], None
        for i in range(7):
            obs = make_obs(20 + i)
            out = c.act(obs["images"], obs["state"], obs["instruction"], seed=i)
            got.append(out.vlm_call)
            full = {**obs, "embodiment": "metaworld", "seed": i}
            if i % 3 == 0:
                cached = policy.infer_batch([full], states=[None])[0]["states"]
            expected = policy.infer_batch([full], states=[cached])[0]["actions"]
            np.testing.assert_allclose(out.actions, expected, rtol=1e-5, atol=1e-6)
        assert got == [0, 0, 0, 3, 3, 3, 6]
        obs = make_obs(40)
        assert c.act(obs["images"], obs["state"], "a different task", seed=0).vlm_call == 7
        steps = rb.ReplayReader(host.config.replay_dir).episodes()[episode].steps
        assert [s["vlm_call"] for s in steps] == [0, 0, 0, 3, 3, 3, 6, 7]
    with pytest.raises(ValueError, match="vlm_every"):
        ServeConfig(checkpoint="x", vlm_every=0)
