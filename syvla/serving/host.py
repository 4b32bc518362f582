"""The policy server's core, without HTTP and without Ray.

`PolicyHost` holds the policies by version, pins episodes to a version, runs
batched inference and records everything served in the replay buffer before
the answer leaves. The FastAPI app (`app.py`) and the Serve deployment
(`deployment.py`) are thin layers over it.

Episode version policy (docs/serving.md#policy-versions): an episode is pinned
to the version that was current when it started; its id carries that version.
A weight update makes the new version current for new episodes while the
previous `keep_versions - 1` versions stay loaded for the episodes still
running on them. An act for an episode whose version is no longer held is
refused with 409 (start a new episode) rather than answered by other weights.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import secrets
import threading
import time
import uuid
from typing import Any, Callable, Mapping

from syvla.serving import protocol
from syvla.serving import replay_buffer as rb
from syvla.serving.blind import BlindSchedule, episode_group
from syvla.serving.config import ServeConfig
from syvla.serving.protocol import ActRequest, ProtocolError

log = logging.getLogger(__name__)


def load_policy(uri: str, device: str = "cpu"):
    """The default loader: a checkpoint directory -> `syvla.model.policy.Policy`."""
    from syvla.model.policy import Policy  # torch/transformers load only on the server

    return Policy.load(uri, device=device)


class PolicyHost:
    """Policies by version + the replay writer. Thread-safe: inference runs in worker threads."""

    def __init__(self, config: ServeConfig, replay: rb.ReplayWriter | None = None,
                 loader: Callable[[str, str], Any] = load_policy):
        self.config = config
        self.replay = replay
        self._loader = loader
        self._policies: dict[int, Any] = {}  # version -> Policy
        self._uris: dict[int, str] = {}
        self._metadata: dict[int, dict] = {}
        self._current: int | None = None
        # Signs episode ids: the app's shared secret (policy_app fills one in), else this host's own.
        self._secret = config.episode_secret.encode() if config.episode_secret else secrets.token_bytes(32)
        self._lock = threading.Lock()  # guards the three dicts and _current (the swap)
        # vlm_every > 1: episode id -> [Feature Query States, cot, instruction, its VLM call, calls so far]
        self._vlm_cache: collections.OrderedDict[str, list] = collections.OrderedDict()
        self._load_lock = threading.Lock()  # one load at a time: a shadow copy costs a model's memory
        self.schedule: BlindSchedule | None = None  # blind servers: assigns new episodes (load_blind)

    @property
    def blind(self) -> bool:
        return self.config.blind

    def load_blind(self) -> None:
        """A blind server's arms: `blind_checkpoints[i]` as version i, then the schedule over them."""
        for version, uri in enumerate(self.config.blind_checkpoints):
            self.load_version(version, uri)
        with self._lock:
            served = {v: (m["embodiments"], m.get("chunk_len")) for v, m in self._metadata.items()}
        if len({repr(e) for e in served.values()}) != 1:
            raise ValueError("blind_checkpoints must serve the same embodiments and chunk length (robots would "
                             f"otherwise tell them apart): {served}")
        seed = self.config.blind_seed if self.config.blind_seed >= 0 else secrets.randbits(63)
        self.schedule = BlindSchedule(range(len(self.config.blind_checkpoints)), seed)

    # ---------------------------------------------------------------- versions

    @property
    def current_version(self) -> int | None:
        return self._current

    @property
    def versions(self) -> list[int]:
        with self._lock:
            return sorted(self._policies)

    def load_version(self, version: int, uri: str) -> bool:
        """Load `uri` as `version` into a shadow copy, then swap it in under the lock.

        Requests keep being served by the versions already held while the load
        runs; in-flight batches keep the policy object they started with. A
        version lower than every held one when `keep_versions` are held is
        ignored (stale publish); returns whether `version` is held afterwards.
        """
        version = int(version)
        if version < 0:
            raise ValueError(f"policy version must be >= 0, got {version}")
        with self._load_lock:
            with self._lock:
                if version in self._policies:
                    return True
                held = sorted(self._policies)
                if len(held) >= self.config.keep_versions and version < held[0]:
                    log.warning("ignoring policy version %d: older than every held version %s", version, held)
                    return False
            t0 = time.perf_counter()
            policy = self._loader(uri, self.config.device)  # the shadow copy: not visible to requests yet
            meta = dict(policy.metadata())
            if meta.get("policy_version") not in (None, version):
                log.warning("checkpoint %s says policy_version %s; serving it as version %d",
                            uri, meta.get("policy_version"), version)
            meta["policy_version"] = version
            with self._lock:
                self._policies[version], self._uris[version], self._metadata[version] = policy, uri, meta
                self._current = max(self._policies)
                for old in sorted(self._policies)[:-self.config.keep_versions]:
                    # In-flight batches still hold a reference; memory goes when they finish.
                    del self._policies[old], self._uris[old], self._metadata[old]
            log.info("policy version %d loaded from %s in %.1f s; held %s", version, uri,
                     time.perf_counter() - t0, self.versions)
            return True

    def metadata(self) -> dict:
        with self._lock:
            if self._current is None:
                raise ProtocolError(503, "", "no policy loaded yet")
            meta = dict(self._metadata[self._current])
            meta["versions_held"] = sorted(self._policies)
        if self.blind:  # what every arm shares, nothing that tells them apart
            meta = {"embodiments": meta["embodiments"], "chunk_len": meta.get("chunk_len"), "blind": True}
        meta["encodings"] = list(protocol.ENCODINGS)
        c = self.config
        meta["limits"] = {**dataclasses.asdict(c.limits), **{k: getattr(c, k) for k in (
            "default_deadline_ms", "body_timeout_s", "upload_grace_s", "max_slow_uploads", "max_batch_size")}}
        meta["formats"] = protocol.FORMATS
        return meta

    def _embodiments(self, version: int) -> Mapping:
        with self._lock:
            meta = self._metadata.get(version)
            held = sorted(self._policies)
        if meta is None:
            raise ProtocolError(409, "episode_id", f"the episode is pinned to policy version {version}, which this "
                                f"server no longer holds (held: {held}); start a new episode")
        return meta["embodiments"]

    def health(self) -> str | None:
        """None when healthy, else the reason."""
        if self._current is None:
            return "no policy loaded"
        if self.replay is not None and self.replay.failed is not None:
            return f"replay buffer failed: {self.replay.failed!r}"
        return None

    # ---------------------------------------------------------------- episodes

    def start_episode(self, body: Any = None) -> dict:
        version = self._current
        if version is None or (self.blind and self.schedule is None):
            raise ProtocolError(503, "", "no policy loaded yet")
        info = protocol.parse_episode_request(body if body is not None else {}, self._embodiments(version))
        extra = {}
        if self.blind:
            slot = self.schedule.assign(episode_group(info))
            version, extra = slot.version, {"blind": slot.record()}
        episode_id = protocol.make_episode_id(uuid.uuid4().hex, version, self._secret, blind=self.blind)
        self._record([{"kind": rb.KIND_EPISODE, "episode_id": episode_id, "time": time.time(),
                       "policy_version": version, **info, **extra}])
        return {"episode_id": episode_id} if self.blind else {"episode_id": episode_id, "policy_version": version}

    def episode_version(self, episode_id: Any) -> int:
        """The pinned version of an id this server issued (a blind id is checked against the held versions); 404
        for any other."""
        return protocol.parse_episode_id(episode_id, self._secret, versions=self.versions if self.blind else ())

    def post_reward(self, episode_id: str, body: Any, source: str = "api", undo_window_s: float = 0.0) -> dict:
        """Record a 0/1 reward; with `undo_window_s`, RL waits that long for a possible `withdraw_reward`."""
        self.episode_version(episode_id)  # 404 before anything is recorded
        reward = protocol.parse_reward_request(body)
        now = time.time()
        record = {"kind": rb.KIND_REWARD, "episode_id": episode_id, "time": now, "reward": reward, "source": source}
        if undo_window_s > 0:
            record["undo_until"] = now + undo_window_s
        self._record([record])
        return {"episode_id": episode_id, "reward": reward}

    def withdraw_reward(self, episode_id: str, source: str) -> None:
        """Record a null reward (the latest wins): the episode awaits a label again."""
        self.episode_version(episode_id)
        self._record([{"kind": rb.KIND_REWARD, "episode_id": episode_id, "time": time.time(), "reward": None,
                       "source": source}])

    # ---------------------------------------------------------------- acting

    def parse_act(self, body: Any) -> ActRequest:
        return protocol.parse_act_request(body, self._embodiments, self.config.limits, self._secret,
                                          versions=self.versions if self.blind else ())

    def act_batch(self, requests: list[ActRequest], arrivals: list[float]) -> list[dict | ProtocolError]:
        """Infer a batch (grouped by pinned version), record it durably, then answer.

        `arrivals` are `time.monotonic()` stamps of each request's arrival;
        results are dicts for `protocol.act_response`, or the error to answer.
        """
        t_start = time.monotonic()
        results: list[dict | ProtocolError | None] = [None] * len(requests)
        groups: dict[int, list[int]] = {}
        for i, (req, arrived) in enumerate(zip(requests, arrivals)):
            budget_ms = req.deadline_ms if req.deadline_ms is not None else self.config.default_deadline_ms
            if (t_start - arrived) * 1e3 > budget_ms:
                results[i] = ProtocolError(504, "deadline_ms", f"deadline of {budget_ms:.0f} ms passed before inference")
            else:
                groups.setdefault(req.policy_version, []).append(i)
        with self._lock:
            policies = {v: self._policies.get(v) for v in groups}
            latest = self._current
        records, infer_ms = [], {}
        for version, idx in groups.items():
            policy = policies[version]
            if policy is None:
                err = ProtocolError(409, "episode_id", f"the episode is pinned to policy version {version}, which "
                                    "this server no longer holds; start a new episode")
                for i in idx:
                    results[i] = err
                continue
            t0 = time.perf_counter()
            outs = self._infer(policy, [requests[i] for i in idx])
            ms = (time.perf_counter() - t0) * 1e3
            for i, out in zip(idx, outs):
                results[i] = out
                if isinstance(out, ProtocolError):
                    continue
                req = requests[i]
                infer_ms[i] = ms
                # Stamp the version the host pinned, whatever the model object says.
                out["policy_version"] = version
                records.append((i, rb.step_record(req.episode_id, req.step, version, req.embodiment,
                                                  req.instruction, req.raw_images, req.state, out["actions"],
                                                  out.get("cot"), req.think, req.seed,
                                                  prefix_actions=req.prefix_actions, prefix_delay=req.prefix_delay,
                                                  vlm_call=out.get("vlm_call"))))
        replay_ms = 0.0
        if records:
            t0 = time.perf_counter()
            try:
                self._record([r for _, r in records])
            except ProtocolError as err:
                for i, _ in records:
                    results[i] = err
            replay_ms = (time.perf_counter() - t0) * 1e3
        for i, res in enumerate(results):
            if isinstance(res, dict):
                res["latest_version"] = latest
                # queue_ms: arrival (before the body was read) to the start of this batch.
                res["timing"] = {"queue_ms": (t_start - arrivals[i]) * 1e3, "infer_ms": infer_ms.get(i, 0.0),
                                 "replay_ms": replay_ms, "batch_size": len(requests)}
        return results

    def act_batch_items(self, items: list[tuple[ActRequest, float]]) -> list[dict | ProtocolError]:
        """`act_batch` over `(request, arrival)` pairs (the batcher's item format)."""
        return self.act_batch([r for r, _ in items], [a for _, a in items])

    VLM_CACHE_EPISODES = 4096  # episodes whose Feature Query States a replica keeps (least recent dropped)

    def _reuse(self, reqs: list[ActRequest]):
        """Per request: the cached Feature Query States to reuse (vlm_every > 1), or None to run the VLM."""
        k = self.config.vlm_every
        if k <= 1:
            return None
        out = []
        for r in reqs:
            c = self._vlm_cache.get(r.episode_id)
            fresh = c is None or c[2] != r.instruction or (c[4] + 1 - c[3]) >= k  # c[4] + 1: this call
            out.append(None if fresh else c[0])
        return out

    def _remember(self, reqs: list[ActRequest], reused, outs: list) -> None:
        for r, states, out in zip(reqs, reused, outs):
            if isinstance(out, ProtocolError):
                continue
            c = self._vlm_cache.get(r.episode_id)
            call = 0 if c is None else c[4] + 1
            if states is None:  # this call ran the VLM
                c = [out["states"], out.get("cot"), r.instruction, call, call]
            else:
                c[4] = call
                out["cot"] = c[1] if r.think else None
            out.pop("states", None)
            out["vlm_call"] = c[3]
            self._vlm_cache[r.episode_id] = c
            self._vlm_cache.move_to_end(r.episode_id)
        while len(self._vlm_cache) > self.VLM_CACHE_EPISODES:
            self._vlm_cache.popitem(last=False)

    def _infer(self, policy, reqs: list[ActRequest]) -> list[dict | ProtocolError]:
        obs = [r.to_obs() for r in reqs]
        reused = self._reuse(reqs)
        try:
            if reused is not None:
                outs = [dict(o) for o in policy.infer_batch(obs, states=reused)]
                self._remember(reqs, reused, outs)
                return outs
            return [dict(o) for o in (policy.infer_batch(obs) if len(obs) > 1 else [policy.infer(obs[0])])]
        except Exception as exc:
            if len(obs) == 1:
                if type(exc).__name__ == "ObservationError":  # the model's own check (Policy.validate): a 4xx
                    return [ProtocolError(422, str(exc).split(":")[0], str(exc))]
                log.exception("policy inference failed")
                return [ProtocolError(500, "", "policy inference failed")]
        # One bad observation must not fail the robots batched with it: retry one by one.
        return [self._infer(policy, [r])[0] for r in reqs]

    def _record(self, records: list[dict]) -> None:
        if self.replay is None:
            return
        try:
            self.replay.append_many(records)
        except Exception as exc:
            log.error("replay buffer write failed: %r", exc)
            raise ProtocolError(503, "", "replay buffer unavailable; request not recorded") from None
