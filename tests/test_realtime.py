"""The robot-side real-time controller against a fake server with a fixed delay (threads and a real clock;
no model, no Ray): it keeps its control rate, overlaps requests with execution, sends the committed
prefix and the delay it expects, and switches chunks without replaying executed steps."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from syvla.realtime import LatencyTracker, RealtimeController

H, HZ, S = 50, 100.0, 10  # chunk length, control rate, actions executed per chunk before the next request


class DelayedServer:
    """Answers after `delay_s`; chunk k's step i is the value 1000 * k + i, so what ran is legible."""

    def __init__(self, delay_s):
        self.delay_s, self.calls = delay_s, []

    def __call__(self, obs, prefix, delay):
        self.calls.append({"obs": obs, "prefix": None if prefix is None else prefix.copy(), "delay": delay})
        time.sleep(self.delay_s)
        k = len(self.calls) - 1
        return (1000.0 * k + np.arange(H, dtype=np.float32))[:, None]


def run(mode, delay_s, steps=200, late="hold"):
    server, executed = DelayedServer(delay_s), []
    ctl = RealtimeController(server, observe=lambda: len(executed), execute=lambda a: executed.append(float(a[0])),
                             control_hz=HZ, execute_steps=S, mode=mode, late=late,
                             hold_action=lambda last: np.asarray([-1.0], np.float32),
                             tracker=LatencyTracker(initial_s=0.0))
    t0 = time.monotonic()
    stats = ctl.run(steps)
    ctl.close()
    return server, executed, stats, time.monotonic() - t0


def test_keeps_the_control_rate_while_a_slow_server_answers():
    server, executed, stats, seconds = run("rtc", delay_s=0.06)  # 6 control steps of latency
    assert len(executed) == 200 and stats.late_steps == 0
    assert seconds == pytest.approx(200 / HZ, rel=0.25)  # no stop-and-wait: 2 s for 200 steps at 100 Hz
    assert np.quantile(stats.tick_lateness_s, 0.95) < 0.03
    assert stats.requests >= 10
    # Chunk switches skip the steps already executed while waiting: executed values never repeat a step.
    assert len(set(executed)) == len(executed)
    # After the first answers the tracker expects ~6-7 steps and says so in the request.
    assert all(6 <= c["delay"] <= 12 for c in server.calls[3:]), [c["delay"] for c in server.calls]
    for c, waited in zip(server.calls[1:], stats.delays_seen[1:]):
        # The committed prefix is the rest of the current chunk, and it is what ran while waiting.
        at = c["obs"]  # steps executed when the request left
        assert c["prefix"] is not None and len(c["prefix"]) < H and waited <= len(c["prefix"])
        assert executed[at:at + waited] == list(c["prefix"][:waited, 0])
    assert stats.delays_seen[3] == pytest.approx(6, abs=2)


def test_sync_mode_stops_and_waits():
    _, executed, stats, seconds = run("sync", delay_s=0.06, steps=100)
    assert len(executed) == 100 and stats.late_steps == 0
    # 10 waits of ~60 ms on top of 1 s of steps.
    assert seconds > 100 / HZ + 0.4
    first = executed[:S]
    assert first == list(np.arange(S, dtype=np.float32))  # chunk 0 from its start; then chunk 1 from its start
    assert executed[S] == 1000.0


def test_naive_mode_sends_no_prefix_and_a_late_answer_holds():
    server, executed, stats, _ = run("naive", delay_s=0.5, steps=80)  # 50 steps of latency > the 40 left
    assert all(c["prefix"] is None and c["delay"] == 0 for c in server.calls)
    assert stats.late_steps > 0 and -1.0 in executed  # the hold action ran while the answer was late
    _, executed, stats, _ = run("naive", delay_s=0.5, steps=80, late="continue")
    assert stats.late_steps > 0 and -1.0 not in executed


def test_several_requests_in_flight_keep_a_robot_supplied_when_the_round_trip_outlasts_the_chunk():
    """30 steps of latency against 50-step chunks: one request at a time leaves the robot holding a third of
    the time; with requests pipelined it is supplied, and it never goes back to an older chunk."""
    import threading

    class Pipelined:  # numbers chunks in the order the requests arrive, so concurrent answers stay legible
        def __init__(self, delay_s):
            self.delay_s, self.sent, self.lock = delay_s, 0, threading.Lock()

        def __call__(self, obs, prefix, delay):
            with self.lock:
                k, self.sent = self.sent, self.sent + 1
            time.sleep(self.delay_s)
            return (1000.0 * k + np.arange(H, dtype=np.float32))[:, None]

    late = {}
    for n in (1, 4):
        executed = []
        ctl = RealtimeController(Pipelined(0.3), observe=lambda: None, execute=lambda a: executed.append(float(a[0])),
                                 control_hz=HZ, execute_steps=S, mode="naive",
                                 hold_action=lambda last: np.asarray([-1.0], np.float32),
                                 tracker=LatencyTracker(initial_s=0.3), max_in_flight=n)
        stats = ctl.run(300)
        ctl.close()
        late[n] = stats.late_steps
        chunks = [int(v // 1000) for v in executed if v >= 0]
        assert chunks == sorted(chunks)  # answers applied in the order they were sent
        assert stats.max_in_flight_seen <= n
    assert late[1] > 50 and late[4] < 0.25 * late[1], late
    with pytest.raises(ValueError, match="max_in_flight"):
        RealtimeController(lambda *a: None, lambda: None, lambda a: None, 10, 5, mode="sync", max_in_flight=2)


def test_configuration_errors():
    with pytest.raises(ValueError, match="mode"):
        RealtimeController(lambda *a: None, lambda: None, lambda a: None, 10, 5, mode="fast")
    with pytest.raises(ValueError, match="late"):
        RealtimeController(lambda *a: None, lambda: None, lambda a: None, 10, 5, late="skip")
    tracker = LatencyTracker(window=4, quantile=1.0, initial_s=0.05)
    assert tracker.expected_steps(100) == 5
    for s in (0.01, 0.02, 0.12):
        tracker.add(s)
    assert tracker.expected_steps(100) == 12


def test_the_realtime_module_loads_no_torch_no_ray():
    code = "import json, sys; import syvla.realtime; print(json.dumps([m for m in ('torch', 'ray') if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
