"""Wire format: both encodings round-trip, and every malformed field is refused by name."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
from serving_testlib import CAMERAS, STATE_DIM, make_obs
from PIL import Image

from syvla.serving import protocol as P

EMB = {"metaworld": {"state_dim": STATE_DIM, "action_dim": 4, "cameras": list(CAMERAS)}}
LIMITS = P.Limits(max_image_side=256)
SECRET = b"episode-secret"
EPISODE = P.make_episode_id("0" * 32, 3, SECRET)


def body(encoding: str, image_format: str = "raw", **override) -> dict:
    obs = make_obs(0)
    binary = encoding == P.MSGPACK
    if image_format == "raw":
        images = {c: P.pack_array(v, binary=binary) for c, v in obs["images"].items()}
    else:
        images = {c: P.encode_png(v) if binary else base64.b64encode(P.encode_png(v)).decode()
                  for c, v in obs["images"].items()}
    doc = {"episode_id": EPISODE, "embodiment": "metaworld", "images": images,
           "state": P.pack_array(obs["state"], binary) if binary else obs["state"].tolist(),
           "instruction": obs["instruction"], "seed": 7, "step": 2}
    doc.update(override)
    return doc


def roundtrip(doc: dict, encoding: str) -> P.ActRequest:
    return P.parse_act_request(P.decode(P.encode(doc, encoding), encoding), EMB, LIMITS, SECRET)


@pytest.mark.parametrize("encoding", P.ENCODINGS)
@pytest.mark.parametrize("image_format", ["raw", "png"])
def test_act_request_roundtrip(encoding, image_format):
    obs = make_obs(0)
    req = roundtrip(body(encoding, image_format), encoding)
    assert req.policy_version == 3 and req.step == 2 and req.seed == 7
    for cam in CAMERAS:
        np.testing.assert_array_equal(req.images[cam], obs["images"][cam])  # PNG is lossless
    np.testing.assert_array_equal(req.state, obs["state"])
    assert req.state.dtype == np.float32
    assert set(req.to_obs()) == {"embodiment", "images", "state", "instruction", "think", "seed"}


def test_jpeg_image_accepted():
    buf = io.BytesIO()
    Image.fromarray(make_obs(0)["images"]["corner2"]).save(buf, format="JPEG")
    doc = body(P.MSGPACK)
    doc["images"]["corner2"] = buf.getvalue()
    assert roundtrip(doc, P.MSGPACK).images["corner2"].shape == (32, 32, 3)


def test_png_encoder_matches_pil():
    img = make_obs(1)["images"]["topview"]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(P.encode_png(img)))), img)


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


BAD = [
    # (override, expected field, expected status)
    ({"embodiment": "aloha"}, "embodiment", 422),
    ({"episode_id": "nope"}, "episode_id", 404),
    ({"episode_id": 5}, "episode_id", 422),
    ({"state": [0.0] * (STATE_DIM - 1)}, "state", 422),
    ({"state": [0.0] * (STATE_DIM - 1) + [math.nan]}, f"state[{STATE_DIM - 1}]", 422),
    ({"state": [0.0] * (STATE_DIM - 1) + [1e300]}, f"state[{STATE_DIM - 1}]", 422),
    ({"state": [True] * STATE_DIM}, "state", 422),
    ({"state": P.pack_array(np.zeros(STATE_DIM, np.int64))}, "state", 422),
    ({"state": {"dtype": "float32", "shape": [STATE_DIM], "data": b"\0" * 5}}, "state", 422),
    ({"instruction": 3}, "instruction", 422),
    ({"instruction": "  "}, "instruction", 422),
    ({"instruction": "x" * 5000}, "instruction", 422),
    ({"think": "yes"}, "think", 422),
    ({"seed": -1}, "seed", 422),
    ({"step": 1.5}, "step", 422),
    ({"deadline_ms": 0}, "deadline_ms", 422),
    ({"surprise": 1}, "surprise", 422),
    ({"images": []}, "images", 422),
]


@pytest.mark.parametrize("override,field,status", BAD)
def test_bad_fields_are_named(override, field, status):
    with pytest.raises(P.ProtocolError) as err:
        roundtrip(body(P.MSGPACK, **override), P.MSGPACK)
    assert (err.value.field, err.value.status) == (field, status), err.value


def image_case(cam: str, value) -> dict:
    doc = body(P.MSGPACK)
    doc["images"][cam] = value
    return doc


def test_image_problems_are_named():
    cases = {
        "missing camera": (lambda d: d["images"].pop("topview"), "images.topview", 422),
        "unknown camera": (lambda d: d["images"].__setitem__("wrist", b""), "images.wrist", 422),
        "corrupt png": (lambda d: d["images"].__setitem__("corner2", P.encode_png(np.zeros((8, 8, 3), np.uint8))[:40]),
                        "images.corner2", 422),
        "not an image": (lambda d: d["images"].__setitem__("corner2", b"GIF89a...."), "images.corner2", 422),
        "grey png": (lambda d: d["images"].__setitem__("corner2", _png(np.zeros((8, 8), np.uint8))),
                     "images.corner2", 422),
        "float pixels": (lambda d: d["images"].__setitem__("corner2", P.pack_array(np.zeros((8, 8, 3), np.float32))),
                         "images.corner2", 422),
        "two channels": (lambda d: d["images"].__setitem__("corner2", P.pack_array(np.zeros((8, 8, 2), np.uint8))),
                         "images.corner2", 422),
        "too large": (lambda d: d["images"].__setitem__("corner2", _png(np.zeros((8, 300, 3), np.uint8))),
                      "images.corner2", 413),
        "bad base64": (lambda d: d["images"].__setitem__("corner2", "%%%"), "images.corner2", 422),
    }
    for name, (mutate, field, status) in cases.items():
        doc = body(P.MSGPACK)
        mutate(doc)
        with pytest.raises(P.ProtocolError) as err:
            P.parse_act_request(doc, EMB, LIMITS, SECRET)
        assert (err.value.field, err.value.status) == (field, status), (name, err.value)


def test_missing_fields_and_corrupt_bodies():
    for key in ("episode_id", "embodiment", "images", "state", "instruction"):
        doc = body(P.JSON)
        del doc[key]
        with pytest.raises(P.ProtocolError, match=f"^{key}: missing"):
            P.parse_act_request(doc, EMB, LIMITS, SECRET)
    for raw, enc in ((b"{", P.JSON), (b"\xc1", P.MSGPACK), (b"[" * 100000, P.JSON)):
        with pytest.raises(P.ProtocolError) as err:
            P.decode(raw, enc)
        assert (err.value.status, err.value.field) == (400, "body")
    with pytest.raises(P.ProtocolError) as err:
        P.encoding_of("text/plain")
    assert err.value.status == 415


def test_negotiation():
    assert P.encoding_of("application/msgpack") == P.MSGPACK
    assert P.encoding_of("application/json; charset=utf-8") == P.JSON
    assert P.response_encoding("application/x-msgpack", P.JSON) == P.MSGPACK
    assert P.response_encoding(None, P.MSGPACK) == P.MSGPACK
    assert P.response_encoding("*/*", P.JSON) == P.JSON


def test_episode_id_carries_version_and_rewards_are_binary():
    assert P.parse_episode_id(P.make_episode_id("ab" * 16, 12, SECRET), SECRET) == 12
    # Only ids this server signed: made-up ones, an edited version, another server's secret are unknown (404).
    good = P.make_episode_id("ab" * 16, 12, SECRET)
    for forged in ("ep-" + "0" * 32 + "-v0", "ep-" + "0" * 32 + "-v0-" + "0" * 32, good.replace("-v12-", "-v11-"),
                   P.make_episode_id("ab" * 16, 12, b"other"), good[:-1] + ("0" if good[-1] != "0" else "1")):
        with pytest.raises(P.ProtocolError) as err:
            P.parse_episode_id(forged, SECRET)
        assert (err.value.status, err.value.field) == (404, "episode_id"), forged
    assert P.parse_reward_request({"reward": 1}) == 1 and P.parse_reward_request({"reward": False}) == 0
    for bad in ({"reward": 0.5}, {"reward": "1"}, {}, {"reward": 1, "x": 2}):
        with pytest.raises(P.ProtocolError):
            P.parse_reward_request(bad)


@pytest.mark.parametrize("encoding", P.ENCODINGS)
def test_act_response_actions_roundtrip(encoding):
    actions = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    doc = P.act_response(EPISODE, actions, 3, 4, None, 1, {"infer_ms": 1.0}, encoding)
    back = P.decode(P.encode(doc, encoding), encoding)
    np.testing.assert_array_equal(P.parse_actions(back["actions"]), actions)
    assert back["policy_version"] == 3 and back["latest_policy_version"] == 4
