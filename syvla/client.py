"""The robot-side client of the policy server.

Needs only numpy, httpx and msgpack (no torch, no ray, no PIL): a robot's
computer installs `syvla` and imports this module alone.

    client = PolicyClient("http://127.0.0.1:8000", api_key=None, encoding="msgpack")
    client.start_episode(instruction="pick up the puck")
    out = client.act(images={"corner2": img, ...}, state=state, instruction="pick up the puck")
    for action in out.actions: robot.step(action)          # float32 [chunk, action_dim]
    client.post_reward(1)

Retries (docs/serving.md#errors-and-retries), with backoff until the call's `deadline` runs out:
connection failures (nothing reached the server), a connection dropped before the answer, any 503
(back-pressure, slow uploads, replica starting, honouring Retry-After), and 500/502/504 answers that
are not the server's own `{"error"}` document (the proxy lost the replica). Other errors raise
`PolicyServerError` at once. A retried act repeats its step index, so the replay buffer keeps the
answer the robot got; an act that timed out on the client is not retried.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from typing import Any, Mapping

import httpx
import numpy as np

from syvla.serving import protocol



def _retryable(resp: httpx.Response) -> bool:
    """503 always; 500/502/504 only when they are not the server's own error document (a proxy's)."""
    if resp.status_code == 503:
        return True
    if resp.status_code not in (500, 502, 504):
        return False
    try:
        obj = protocol.decode(resp.content, protocol.encoding_of(resp.headers.get("content-type")))
    except protocol.ProtocolError:
        return True
    return not (isinstance(obj, dict) and isinstance(obj.get("error"), dict))


class PolicyServerError(RuntimeError):
    """The server refused a request: `status`, and the `field` it names."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"HTTP {status} {field}: {message}" if field else f"HTTP {status}: {message}")
        self.status, self.field, self.message = status, field, message


@dataclasses.dataclass(frozen=True)
class ActResult:
    actions: np.ndarray  # float32 [chunk, action_dim], raw units of the embodiment
    policy_version: int | None  # the version that produced these actions (the episode's pinned one); None: blind
    latest_policy_version: int | None  # the newest version the server holds (new episodes get it); None: blind
    episode_id: str
    step: int | None
    cot: str | None
    timing: dict  # server-side milliseconds: queue_ms, infer_ms, replay_ms, server_ms; batch_size ({} when blind)
    vlm_call: int | None = None  # with the server's vlm_every > 1: the episode's act call whose VLM forward
    #                              produced the Feature Query States of this chunk


class PolicyClient:
    """HTTP client of one policy server. Not thread-safe: one per robot (or per thread)."""

    def __init__(self, url: str, api_key: str | None = None, encoding: str = protocol.MSGPACK,
                 timeout: float = 10.0, deadline: float = 30.0, image_format: str | None = None,
                 backoff_s: float = 0.05, http: httpx.Client | None = None):
        """`http`: an httpx.Client to send through (e.g. a test client); the default opens its own."""
        if encoding not in protocol.ENCODINGS:
            raise ValueError(f"PolicyClient.encoding must be one of {protocol.ENCODINGS}, got {encoding!r}")
        image_format = image_format or ("raw" if encoding == protocol.MSGPACK else "png")
        if image_format not in ("raw", "png"):
            raise ValueError(f"PolicyClient.image_format must be 'raw' or 'png', got {image_format!r}")
        if timeout <= 0 or deadline <= 0:
            raise ValueError("PolicyClient.timeout and PolicyClient.deadline must be > 0 seconds")
        self.url = url.rstrip("/")
        self.encoding, self.image_format = encoding, image_format
        self.timeout, self.deadline, self.backoff_s = timeout, deadline, backoff_s
        self._headers = {"accept": protocol.CONTENT_TYPES[encoding], "content-type": protocol.CONTENT_TYPES[encoding]}
        if api_key:
            self._headers[protocol.API_KEY_HEADER] = api_key
        self._http = http or httpx.Client(timeout=timeout)
        self._metadata: dict | None = None
        self.episode_id: str | None = None
        self.step = 0
        self._step_lock = threading.Lock()

    # ---------------------------------------------------------------- API

    def healthz(self) -> dict:
        return self._call("GET", "/healthz")

    def metadata(self, refresh: bool = False) -> dict:
        if self._metadata is None or refresh:
            self._metadata = self._call("GET", "/v1/metadata")
        return self._metadata

    def start_episode(self, embodiment: str | None = None, instruction: str | None = None) -> str:
        """Start an episode (pinned to the server's current policy version); acts default to it."""
        body = {k: v for k, v in (("embodiment", embodiment), ("instruction", instruction)) if v is not None}
        out = self._call("POST", "/v1/episodes", body)
        self.episode_id, self.step = out["episode_id"], 0
        return self.episode_id

    def act(self, images: Mapping[str, Any], state, instruction: str, embodiment: str | None = None,
            think: bool = False, seed: int | None = None, episode_id: str | None = None,
            prefix_actions=None, prefix_delay: int = 0) -> ActResult:
        """One action chunk. `images`: {camera: uint8 [H, W, 3] array, or PNG/JPEG bytes}.

        Real-time chunking: `prefix_actions` are the actions of the current chunk the robot will still
        execute (float32 [n, action_dim], robot units), `prefix_delay` how many of them will have run when
        the answer arrives; the new chunk agrees with them, and its first `prefix_delay` steps are those."""
        episode_id = episode_id or self.episode_id
        if episode_id is None:
            raise ValueError("PolicyClient.act needs an episode: call start_episode() first or pass episode_id")
        embodiment = embodiment or self._only_embodiment()
        binary = self.encoding == protocol.MSGPACK
        state = np.asarray(state, dtype=np.float32)
        if not np.all(np.isfinite(state)):  # fail on the robot, before a round trip the server would refuse
            raise ValueError(f"state: must be finite, got {state.tolist()}")
        body = {
            "episode_id": episode_id,
            "embodiment": embodiment,
            "images": {cam: self._image(cam, img, binary) for cam, img in images.items()},
            "state": protocol.pack_array(state) if binary else state.tolist(),
            "instruction": instruction,
            "think": bool(think),
            "seed": seed,
            "step": self._next_step() if episode_id == self.episode_id else None,
        }
        if prefix_actions is not None:
            prefix = np.asarray(prefix_actions, dtype=np.float32)
            if prefix.ndim != 2 or not np.all(np.isfinite(prefix)) or not 0 <= prefix_delay <= len(prefix):
                raise ValueError(f"prefix_actions must be finite [n, action_dim] and 0 <= prefix_delay <= n, got "
                                 f"{list(prefix.shape)} and {prefix_delay}")
            body["prefix_actions"] = protocol.pack_array(prefix) if binary else prefix.tolist()
            body["prefix_delay"] = int(prefix_delay)
        out = self._call("POST", "/v1/act", body, send_deadline=True)
        return ActResult(actions=protocol.parse_actions(out["actions"]), policy_version=out.get("policy_version"),
                         latest_policy_version=out.get("latest_policy_version"), episode_id=out["episode_id"],
                         step=out.get("step"), cot=out.get("cot"), timing=out.get("timing", {}),
                         vlm_call=out.get("vlm_call"))

    def post_reward(self, reward: int, episode_id: str | None = None) -> dict:
        """The episode's 0/1 outcome (a human's verdict, or the simulator's success)."""
        episode_id = episode_id or self.episode_id
        if episode_id is None:
            raise ValueError("PolicyClient.post_reward needs an episode id")
        return self._call("POST", f"/v1/episodes/{episode_id}/reward", {"reward": int(reward)})

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- internals

    def _next_step(self) -> int:
        """The step index of an act being sent. Taken when it is sent, so acts in flight at once (a real-time
        controller's pipelined requests, from several threads) each get their own."""
        with self._step_lock:
            step, self.step = self.step, self.step + 1
            return step

    def _only_embodiment(self) -> str:
        names = sorted(self.metadata()["embodiments"])
        if len(names) != 1:
            raise ValueError(f"the server serves embodiments {names}: pass embodiment=")
        return names[0]

    def _image(self, cam: str, img: Any, binary: bool) -> Any:
        if isinstance(img, (bytes, bytearray)):  # already PNG/JPEG from the camera driver
            return bytes(img) if binary else base64.b64encode(img).decode()
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:  # no silent casts of float images
            raise ValueError(f"images.{cam}: expected uint8 [H, W, 3], got {img.dtype} {list(img.shape)}")
        if self.image_format == "png":
            png = protocol.encode_png(img)
            return png if binary else base64.b64encode(png).decode()
        return protocol.pack_array(img, binary=binary)

    def _call(self, method: str, path: str, body: dict | None = None, send_deadline: bool = False) -> dict:
        end = time.monotonic() + self.deadline
        delay = self.backoff_s
        resp = None
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                if resp is not None:  # out of time after retryable answers: report the server's last word
                    return self._decode(resp)
                raise TimeoutError(f"{method} {path}: deadline of {self.deadline} s passed")
            content = None
            if body is not None:
                if send_deadline:
                    body = dict(body, deadline_ms=round(remaining * 1e3, 1))
                content = protocol.encode(body, self.encoding)
            try:
                resp = self._http.request(method, self.url + path, content=content, headers=self._headers,
                                          timeout=min(self.timeout, remaining))
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError):
                resp = None  # nothing reached the server, or it went away before answering: safe to retry
            if resp is not None and not _retryable(resp):
                return self._decode(resp)
            wait = delay
            if resp is not None and resp.headers.get("retry-after", "").isdigit():
                wait = max(wait, float(resp.headers["retry-after"]))
            sleep = min(wait, end - time.monotonic())
            if sleep > 0:
                time.sleep(sleep)
            delay = min(delay * 2, 1.0)

    @staticmethod
    def _decode(resp: httpx.Response) -> dict:
        media = resp.headers.get("content-type", "")
        try:
            obj = protocol.decode(resp.content, protocol.encoding_of(media))
        except protocol.ProtocolError:
            obj = {"error": {"field": "", "message": resp.text[:300]}}
        if resp.status_code >= 400:
            err = obj.get("error") if isinstance(obj, dict) else None
            if isinstance(err, dict):
                raise PolicyServerError(resp.status_code, str(err.get("field", "")), str(err.get("message", "")))
            raise PolicyServerError(resp.status_code, "", str(obj)[:300])
        return obj
