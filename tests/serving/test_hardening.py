"""The endpoint under hostile or careless clients, over real sockets (uvicorn in a thread, no Ray):
stalled uploads, forged episode ids, the documented error format everywhere, images the docs refuse,
and the client's retries of a proxy's errors."""

from __future__ import annotations

import io
import json
import socket
import struct
import time
import zlib

import httpx
import msgpack
import numpy as np
import pytest
from serving_testlib import CAMERAS, make_obs, uvicorn_server

from syvla.client import PolicyClient, PolicyServerError
from syvla.serving import protocol as P
from syvla.serving import replay_buffer as rb
from syvla.serving.app import create_app
from syvla.serving.config import ServeConfig
from syvla.serving.host import PolicyHost

STALLED = 100
SLOW_SLOTS = 8
BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def live(tmp_path_factory, debug_ckpts):
    tmp = tmp_path_factory.mktemp("hardening")
    cfg = ServeConfig(checkpoint=str(debug_ckpts[0]), version=0, replay_dir=str(tmp / "replay"),
                      body_timeout_s=BODY_TIMEOUT_S, upload_grace_s=0.25, max_slow_uploads=SLOW_SLOTS)
    host = PolicyHost(cfg, replay=rb.ReplayWriter(cfg.replay_dir, writer_id="hardening"))
    host.load_version(0, cfg.checkpoint)
    with uvicorn_server(create_app(host), backlog=512) as (url, port):
        yield host, url, port, tmp / "replay"


def _stall(port: int) -> socket.socket:
    """A connection that promises a 1000-byte body and sends 10 bytes of it."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/act HTTP/1.1\r\nHost: robot\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n" + b'{"episode"')
    return s


def _response(s: socket.socket, timeout: float) -> tuple[int, dict, dict]:
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    while len(body) < int(headers.get("content-length", 0)):
        body += s.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_stalled_uploads_neither_block_health_nor_hold_slots(live):
    host, url, port, _ = live
    socks = [_stall(port) for _ in range(STALLED)]
    try:
        worst = 0.0
        for _ in range(8):  # over the grace period and well into the body timeout
            t0 = time.monotonic()
            assert httpx.get(url + "/healthz", timeout=5).status_code == 200
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.25)
        assert worst < 1.0, f"/healthz took {worst:.2f} s under {STALLED} stalled uploads"
        # A robot still acts meanwhile.
        with PolicyClient(url, encoding="msgpack") as c:
            c.start_episode()
            obs = make_obs(1, side=16)
            assert c.act(obs["images"], obs["state"], obs["instruction"], seed=1).actions.shape[0] > 0
        answers = [_response(s, BODY_TIMEOUT_S + 10) for s in socks]
    finally:
        for s in socks:
            s.close()
    statuses = sorted(status for status, _, _ in answers)
    # Past the grace period, at most SLOW_SLOTS keep reading (408 at the body deadline); the rest were
    # turned away at once with a retryable 503. Every answer is the documented error document.
    assert statuses.count(408) == SLOW_SLOTS and statuses.count(503) == STALLED - SLOW_SLOTS, statuses
    for status, headers, body in answers:
        assert body["error"]["status"] == status and body["error"]["field"] == "body"
        assert headers.get("connection") == "close"
        if status == 503:
            assert headers["retry-after"] == "1"


def test_forged_episode_ids_are_unknown_and_never_recorded(live):
    host, url, _, replay = live
    obs = make_obs(2, side=16)
    with PolicyClient(url, encoding="msgpack") as c:
        real = c.start_episode()
        uid, version = real.split("-")[1], int(real.split("-v")[1].split("-")[0])
        forged = ["ep-" + "0" * 32 + "-v0", "ep-" + "0" * 32 + "-v0-" + "0" * 32,
                  real.replace(f"-v{version}-", f"-v{version + 1}-"), "ep-" + uid + f"-v{version}-" + "f" * 32]
        for eid in forged:
            with pytest.raises(PolicyServerError) as err:
                c.act(obs["images"], obs["state"], obs["instruction"], episode_id=eid)
            assert (err.value.status, err.value.field) == (404, "episode_id"), eid
            with pytest.raises(PolicyServerError) as err:
                c.post_reward(1, episode_id=eid)
            assert (err.value.status, err.value.field) == (404, "episode_id"), eid
        c.act(obs["images"], obs["state"], obs["instruction"], episode_id=real)
        c.post_reward(1, episode_id=real)
    episodes = rb.ReplayReader(replay).episodes(decode=False)
    assert real in episodes and not set(forged) & set(episodes)


def _png(width: int, height: int, depth: int = 8, colour: int = 2, rows: bytes | None = None) -> bytes:
    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    channels = {0: 1, 2: 3, 6: 4}[colour]
    if rows is None:
        rows = b"".join(b"\0" + b"\0" * (width * channels * depth // 8) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _act_status(url: str, episode_id: str, image: bytes) -> tuple[int, dict]:
    obs = make_obs(3, side=16)
    images = {c: P.encode_png(obs["images"][c]) for c in CAMERAS}
    images["corner2"] = image
    body = {"episode_id": episode_id, "embodiment": "metaworld", "images": images, "state": obs["state"].tolist(),
            "instruction": "push"}
    r = httpx.post(url + "/v1/act", content=msgpack.packb(body), headers={"content-type": "application/msgpack"})
    return r.status_code, msgpack.unpackb(r.content)


def test_images_and_requests_get_the_documented_status(live):
    host, url, port, _ = live
    with PolicyClient(url) as c:
        eid = c.start_episode()
    # A header claiming 20000 x 20000 is "too large" (413), refused before any decoder runs.
    status, body = _act_status(url, eid, _png(20000, 20000, rows=b""))
    assert (status, body["error"]["field"]) == (413, "images.corner2"), body
    # 16-bit RGB is refused by name, never cut to 8 bits; so is RGBA.
    status, body = _act_status(url, eid, _png(16, 16, depth=16))
    assert status == 422 and "8-bit RGB, got 16-bit RGB" in body["error"]["message"], body
    status, body = _act_status(url, eid, _png(16, 16, colour=6))
    assert status == 422 and "RGBA" in body["error"]["message"], body
    assert _act_status(url, eid, _png(16, 16))[0] == 200  # the same route takes an 8-bit RGB PNG
    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("RGB", (16, 16)).save(jpeg, format="JPEG")
    assert _act_status(url, eid, jpeg.getvalue())[0] == 200

    # A body without Content-Type is 415; a bodiless POST /v1/episodes needs none.
    r = httpx.post(url + "/v1/episodes", content=b"{}", headers={"content-type": ""})
    assert r.status_code == 415 and r.json()["error"]["field"] == "content-type"
    assert httpx.post(url + "/v1/episodes").status_code == 200
    # Unknown routes and wrong methods answer in the error format, in the negotiated encoding.
    r = httpx.get(url + "/v2/act")
    assert r.status_code == 404 and r.json()["error"] == {"status": 404, "field": "path", "message": "no route '/v2/act'"}
    r = httpx.get(url + "/v1/act", headers={"accept": "application/msgpack"})
    assert r.status_code == 405 and msgpack.unpackb(r.content)["error"]["field"] == "method"
    # A Content-Length that is not a number never reaches the app: the HTTP server answers 400 and closes.
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(b"POST /v1/episodes HTTP/1.1\r\nHost: robot\r\nContent-Type: application/json\r\n"
                  b"Content-Length: x2\r\n\r\n{}")
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 400")
    finally:
        s.close()


def test_metadata_states_limits_and_formats(live):
    host, url, _, _ = live
    meta = httpx.get(url + "/v1/metadata").json()
    cfg = host.config
    assert meta["limits"] == {"max_body_bytes": cfg.max_body_bytes, "max_image_side": cfg.max_image_side,
                              "max_instruction_chars": 2048, "max_deadline_ms": 600_000.0,
                              "default_deadline_ms": cfg.default_deadline_ms, "body_timeout_s": BODY_TIMEOUT_S,
                              "upload_grace_s": 0.25, "max_slow_uploads": SLOW_SLOTS,
                              "max_batch_size": cfg.max_batch_size}
    assert meta["formats"]["state_dtypes"] == ["float32", "float64"] and "png (8-bit RGB)" in meta["formats"]["image"]


def test_client_retries_a_proxys_errors_but_not_the_servers():
    calls = []

    def proxy_then_ok(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(500, text="Internal Server Error")  # the proxy lost the replica
        if len(calls) == 2:
            return httpx.Response(503, text="Service Unavailable", headers={"retry-after": "0"})
        return httpx.Response(200, json={"status": "ok", "policy_version": 3})

    with PolicyClient("http://robot-api", http=httpx.Client(transport=httpx.MockTransport(proxy_then_ok)),
                      deadline=5, backoff_s=0.01) as c:
        assert c.healthz() == {"status": "ok", "policy_version": 3} and len(calls) == 3

    def ours(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(500, json={"error": {"status": 500, "field": "", "message": "internal server error"}})

    calls.clear()
    with PolicyClient("http://robot-api", http=httpx.Client(transport=httpx.MockTransport(ours)),
                      deadline=5, backoff_s=0.01) as c:
        with pytest.raises(PolicyServerError) as err:
            c.healthz()
    assert err.value.status == 500 and len(calls) == 1  # the server's own 500 is a bug, not a restart


def test_a_retried_step_keeps_the_answer_the_robot_got(tmp_path):
    writer = rb.ReplayWriter(tmp_path, writer_id="w")
    eid = P.make_episode_id("a" * 32, 0, b"k")
    first = rb.step_record(eid, 0, 0, "metaworld", "push", {}, np.zeros(3), np.zeros((2, 4)), None, False, 1, now=10.0)
    retry = rb.step_record(eid, 0, 0, "metaworld", "push", {}, np.zeros(3), np.ones((2, 4)), None, False, 1, now=11.0)
    nxt = rb.step_record(eid, 1, 0, "metaworld", "push", {}, np.zeros(3), np.ones((2, 4)), None, False, 2, now=12.0)
    writer.append_many([first, retry, nxt])
    steps = rb.ReplayReader(tmp_path).episodes(decode=False)[eid].steps
    assert [s["step"] for s in steps] == [0, 1] and steps[0]["time"] == 11.0


@pytest.mark.parametrize("doc", ["README.md", "docs/serving.md"])
def test_client_examples_in_the_docs_run_as_written(live, doc):
    """Every python block that builds a PolicyClient runs against a live server; only its URL and the
    camera images / state it names are supplied."""
    import re
    from pathlib import Path

    _, url, _, _ = live
    text = (Path(__file__).resolve().parents[2] / doc).read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "PolicyClient(" in b]
    assert blocks, f"{doc} has no client example"
    obs = make_obs(5, side=16)
    for block in blocks:
        assert "http://127.0.0.1:8000" in block
        scope = {"img0": obs["images"]["corner2"], "img1": obs["images"]["topview"],
                 "img2": obs["images"]["gripperPOV"], "state": obs["state"], "state39": obs["state"]}
        exec(compile(block.replace("http://127.0.0.1:8000", url), doc, "exec"), scope)
        assert scope["out"].actions.shape[1] == 4 and scope["out"].policy_version == 0


@pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")
def test_every_answer_reaches_the_metrics(tmp_path, debug_ckpts):
    """The app reports each answer (route template, status, refused field) and each act's timing parts."""
    from fastapi.testclient import TestClient

    from syvla.serving.metrics import ServingMetrics

    class Recorder(ServingMetrics):
        def __init__(self):
            self.requests, self.acts, self.replay_bytes = [], [], 0

        def request(self, route, status, field=""):
            self.requests.append((route, status, field))

        def act(self, timing, policy_version):
            self.acts.append((dict(timing), policy_version))

        def replay(self, bytes_written):
            self.replay_bytes = bytes_written

    cfg = ServeConfig(checkpoint=str(debug_ckpts[0]), version=0, replay_dir=str(tmp_path / "replay"))
    host = PolicyHost(cfg, replay=rb.ReplayWriter(cfg.replay_dir, writer_id="metrics"))
    host.load_version(0, cfg.checkpoint)
    rec = Recorder()
    with TestClient(create_app(host, metrics=rec)) as http:
        c = PolicyClient("http://testserver", http=http, encoding="msgpack")  # closing it would close `http`
        eid = c.start_episode()
        obs = make_obs(4, side=16)
        c.act(obs["images"], obs["state"], obs["instruction"], seed=0)
        c.post_reward(1)
        http.get("/healthz")
        http.get("/nope")
        http.post("/v1/episodes", content=b"{}", headers={"content-type": "text/plain"})
        http.post(f"/v1/episodes/{eid[:-1]}x/reward", json={"reward": 1})
    assert rec.requests == [("/v1/episodes", 200, ""), ("/v1/metadata", 200, ""), ("/v1/act", 200, ""),
                            ("/v1/episodes/{episode_id}/reward", 200, ""), ("/healthz", 200, ""),
                            ("unknown", 404, "path"), ("/v1/episodes", 415, "content-type"),
                            ("/v1/episodes/{episode_id}/reward", 404, "episode_id")]
    (timing, version), = rec.acts
    assert version == 0 and {"receive_ms", "queue_ms", "infer_ms", "replay_ms", "server_ms", "batch_size"} <= set(timing)
    assert rec.replay_bytes == host.replay.bytes_written > 0
