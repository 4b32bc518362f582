"""Robot side of real-time chunking: act at a fixed control rate while the next chunk is computed.

No torch, no Ray: numpy and threads, beside `syvla.client`.

    controller = RealtimeController(request=lambda obs, prefix, delay: client.act(..., prefix_actions=prefix,
                                    prefix_delay=delay).actions, observe=robot.observe, execute=robot.step,
                                    control_hz=20, execute_steps=25, mode="rtc")
    controller.run(steps=500)

Every `execute_steps` actions of the current chunk (or sooner, when fewer actions are left than 1.5x
the steps the latency tracker expects the answer to take), a background thread sends the observation of that
moment with the actions still ahead in the chunk (the committed prefix) and the delay the latency
tracker expects, in control steps. The robot keeps executing the chunk meanwhile. When the answer
arrives `e` steps after the request, the new chunk replaces the queue from its step `e` on (steps it
already executed from the old chunk are skipped). Modes:
- "rtc": the request carries the prefix and delay; the server inpaints the new chunk to agree with it.
- "naive": the same asynchronous schedule without the prefix (the chunks are independent samples).
- "sync": the robot stops after `execute_steps` actions and waits for the next chunk (no overlap).
A late answer (the queue ran dry first): `late="hold"` executes `hold_action(last)` each step until it
arrives (the default holds the last action; a delta-action robot passes one that keeps still),
`late="continue"` repeats the old chunk's last action instead.

Several requests in flight (`max_in_flight` > 1, asynchronous modes): when waiting for each answer before
asking again would leave the robot short (the round trip is long against the chunk), requests are
pipelined, one every min(execute_steps, chunk - round trip) steps. The newest answer that has arrived is
applied; requests sent before it are superseded and their answers dropped (`stats.stale_answers`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Any, Callable

import numpy as np

MODES = ("rtc", "naive", "sync")
LATE_POLICIES = ("hold", "continue")


class LatencyTracker:
    """Recent request latencies (seconds); the delay to plan for is a high quantile of them, in steps."""

    def __init__(self, window: int = 16, quantile: float = 0.5, initial_s: float = 0.1):
        if window < 1 or not 0.0 < quantile <= 1.0 or initial_s < 0:
            raise ValueError("LatencyTracker needs window >= 1, quantile in (0, 1] and initial_s >= 0")
        self._seen: collections.deque[float] = collections.deque(maxlen=window)
        self.quantile, self.initial_s = quantile, initial_s

    def add(self, seconds: float) -> None:
        self._seen.append(float(seconds))

    def expected_s(self) -> float:
        if not self._seen:
            return self.initial_s
        return float(np.quantile(np.asarray(self._seen), self.quantile))

    def expected_steps(self, control_hz: float) -> int:
        return int(math.ceil(self.expected_s() * control_hz - 1e-9))


@dataclasses.dataclass
class ControllerStats:
    steps: int = 0
    requests: int = 0
    late_steps: int = 0  # steps executed without a plan (hold / continue) while an answer was late
    seams: list = dataclasses.field(default_factory=list)  # |first new action - last old action| per switch
    plan_gaps: list = dataclasses.field(default_factory=list)  # |first new action - the old chunk's action for
    #                                                             that step| per switch (the old plan's step)
    latencies_s: list = dataclasses.field(default_factory=list)
    delays_planned: list = dataclasses.field(default_factory=list)  # steps the tracker expected per request
    delays_seen: list = dataclasses.field(default_factory=list)  # steps that actually passed
    switches: list = dataclasses.field(default_factory=list)  # (step of the switch, delay planned, steps passed)
    tick_lateness_s: list = dataclasses.field(default_factory=list)  # how late each step ran vs its slot
    chunks: list = dataclasses.field(default_factory=list)  # every chunk received, whole
    executed: list = dataclasses.field(default_factory=list)  # every action executed, in order
    stale_answers: int = 0  # answers dropped: a later request's answer was applied first
    dropped_errors: list = dataclasses.field(default_factory=list)  # errors of those dropped requests
    max_in_flight_seen: int = 0


class RealtimeController:
    def __init__(self, request: Callable[[Any, np.ndarray | None, int], np.ndarray], observe: Callable[[], Any],
                 execute: Callable[[np.ndarray], Any], control_hz: float, execute_steps: int, mode: str = "rtc",
                 late: str = "hold", hold_action: Callable[[np.ndarray], np.ndarray] | None = None,
                 tracker: LatencyTracker | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, soft_steps: int | None = None,
                 max_in_flight: int = 1):
        """`request(obs, prefix, delay)` -> the new chunk [H, action_dim] (prefix None in "naive"/"sync" mode);
        `observe()` -> the robot's observation now; `execute(action)` runs one control step.
        `soft_steps`: the prefix sent is the expected delay plus this many more actions of the current chunk
        (the soft-masked part the new chunk leans toward); None sends all of the rest (Black et al.).
        `max_in_flight`: requests that may be waiting for their answers at once (asynchronous modes); `request`
        must then be safe to call from several threads."""
        if mode not in MODES:
            raise ValueError(f"RealtimeController.mode must be one of {MODES}, got {mode!r}")
        if late not in LATE_POLICIES:
            raise ValueError(f"RealtimeController.late must be one of {LATE_POLICIES}, got {late!r}")
        if control_hz <= 0 or execute_steps < 1:
            raise ValueError("RealtimeController needs control_hz > 0 and execute_steps >= 1")
        self.request, self.observe, self.execute = request, observe, execute
        self.hz, self.s, self.mode, self.late = float(control_hz), int(execute_steps), mode, late
        self.hold_action = hold_action or (lambda last: last)
        self.tracker = tracker or LatencyTracker()
        self.clock, self.sleep = clock, sleep
        if soft_steps is not None and soft_steps < 0:
            raise ValueError(f"RealtimeController.soft_steps must be >= 0 or None, got {soft_steps}")
        self.soft_steps = soft_steps
        if max_in_flight < 1 or (mode == "sync" and max_in_flight != 1):
            raise ValueError(f"RealtimeController.max_in_flight must be >= 1 (1 in sync mode), got {max_in_flight}")
        self.max_in_flight = int(max_in_flight)
        self.stats = ControllerStats()
        self._queue: collections.deque = collections.deque()
        self._since_chunk = 0
        self._last: np.ndarray | None = None
        # Requests waiting for their answers, oldest first: {"thread", "result", "error", "t0", "step0", "planned"}
        self._pending: list[dict] = []
        self._superseded: list[dict] = []  # requests whose answers will be dropped, still running

    # ---- requests ------------------------------------------------------------------------------
    def _start_request(self) -> None:
        planned = self.tracker.expected_steps(self.hz)
        prefix = np.asarray(list(self._queue), np.float32) if (self.mode == "rtc" and self._queue) else None
        if prefix is not None and self.soft_steps is not None:
            prefix = prefix[: planned + self.soft_steps]
        delay = 0 if prefix is None else min(planned, len(prefix))
        obs = self.observe()
        job = {"result": None, "error": None, "t0": self.clock(), "step0": self.stats.steps, "planned": planned}

        def call():
            try:
                job["result"] = np.asarray(self.request(obs, prefix, delay), np.float32)
            except BaseException as e:  # re-raised on the control thread
                job["error"] = e
            job["t1"] = self.clock()

        job["thread"] = threading.Thread(target=call, daemon=True, name="syvla-realtime-request")
        self.stats.requests += 1
        self.stats.delays_planned.append(planned)
        self._pending.append(job)
        self.stats.max_in_flight_seen = max(self.stats.max_in_flight_seen, len(self._pending))
        job["thread"].start()

    def _take_answers(self) -> None:
        """Apply the newest answer that has arrived. Requests sent before it are superseded: dropped
        (`stats.stale_answers`; their errors are kept in `stats.dropped_errors`, not raised), and those
        still running are left to finish on their own threads (`close` waits for them)."""
        done = [i for i, j in enumerate(self._pending) if not j["thread"].is_alive()]
        if not done:
            return
        newest = self._pending[done[-1]]
        for job in self._pending[: done[-1]]:
            self.stats.stale_answers += 1
            if job["thread"].is_alive():
                self._superseded.append(job)
            elif job["error"] is not None:
                self.stats.dropped_errors.append(repr(job["error"]))
        self._pending = self._pending[done[-1] + 1:]
        self._take_answer(newest)

    def _take_answer(self, job: dict) -> None:
        job["thread"].join()
        if job["error"] is not None:
            raise job["error"]
        chunk = job["result"]
        self.stats.chunks.append(chunk)
        elapsed = self.stats.steps - job["step0"]  # steps executed from the old chunk meanwhile
        if job["step0"] > 0 or self.stats.requests > 1:  # the first, blocking request warms the server up
            self.tracker.add(job["t1"] - job["t0"])
        self.stats.switches.append((self.stats.steps, job["planned"], elapsed))
        self.stats.latencies_s.append(job["t1"] - job["t0"])
        self.stats.delays_seen.append(elapsed)
        rest = chunk[min(elapsed, len(chunk)) :]
        if self._last is not None and len(rest):
            self.stats.seams.append(float(np.abs(rest[0] - self._last).max()))
            if self._queue:  # what the old chunk would have done at this step
                self.stats.plan_gaps.append(float(np.abs(rest[0] - self._queue[0]).max()))
        self._queue = collections.deque(rest)
        self._since_chunk = 0

    # ---- the loop ------------------------------------------------------------------------------
    def _lead_steps(self) -> int:
        """Ask again when no more actions than this are left: the expected latency and half of it again
        (round trips vary; an answer after the chunk ran out is a late step)."""
        expected = self.tracker.expected_steps(self.hz)
        return expected + max(2, expected // 2)

    def _another_request(self) -> bool:
        """With requests in flight: whether to send one more now. Only when waiting for the newest answer
        before asking again would leave the robot short (twice the expected round trip, plus the lead's
        margin, exceeds a chunk); then requests go out every min(execute_steps, chunk - round trip) steps,
        the steps each answer still brings."""
        if len(self._pending) >= self.max_in_flight or not self.stats.chunks:
            return False
        horizon, expected = len(self.stats.chunks[-1]), self.tracker.expected_steps(self.hz)
        if expected + self._lead_steps() <= horizon:
            return False
        spacing = max(1, min(self.s, horizon - expected))
        return self.stats.steps - self._pending[-1]["step0"] >= spacing

    def run(self, steps: int, stop: Callable[[], bool] | None = None) -> ControllerStats:
        """Execute `steps` control steps (or until `stop()`), one every 1 / control_hz seconds."""
        period = 1.0 / self.hz
        if not self._queue and not self._pending:  # the first chunk: nothing to overlap with
            self._start_request()
            self._take_answer(self._pending.pop())
        next_tick = self.clock()
        for _ in range(steps):
            if stop is not None and stop():
                break
            self._take_answers()
            if not self._pending and (self._since_chunk >= self.s or (
                    self.mode != "sync" and len(self._queue) <= self._lead_steps())):
                self._start_request()
                if self.mode == "sync":
                    self._take_answer(self._pending.pop())
                    next_tick = self.clock()
            elif self._pending and self._another_request():
                self._start_request()
            if self._queue:
                action = self._queue.popleft()
            else:
                self.stats.late_steps += 1
                last = self._last if self._last is not None else np.zeros(1, np.float32)
                action = self.hold_action(last) if self.late == "hold" else last
            self.stats.tick_lateness_s.append(max(0.0, self.clock() - next_tick))
            self.execute(action)
            self._last = np.asarray(action, np.float32)
            self.stats.executed.append(self._last)
            self._since_chunk += 1
            self.stats.steps += 1
            next_tick += period
            wait = next_tick - self.clock()
            if wait > 0:
                self.sleep(wait)
        return self.stats

    def close(self) -> None:
        for job in self._pending + self._superseded:
            job["thread"].join()
        self._pending, self._superseded = [], []
