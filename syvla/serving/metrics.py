"""What the robot API reports about itself, without Ray: the app calls a `ServingMetrics`.

This base records nothing (the in-process app, tests); the Serve deployment passes
`syvla.serving.deployment.RayServingMetrics`, which exports the same calls as Prometheus
metrics through `ray.util.metrics` (docs/serving.md#metrics).
"""

from __future__ import annotations

from typing import Mapping

ACT_PARTS = ("receive_ms", "queue_ms", "infer_ms", "replay_ms", "server_ms")  # the act reply's timing fields
LATENCY_BOUNDARIES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
BATCH_BOUNDARIES = (1, 2, 4, 8, 16, 32, 64)


class ServingMetrics:
    """The app's report hooks; each call is cheap and never raises into a request."""

    def request(self, route: str, status: int, field: str = "") -> None:
        """One answered request: its route template, HTTP status and, for a refusal, the field named."""

    def act(self, timing: Mapping[str, float], policy_version: int) -> None:
        """One answered act: `timing` as in the reply ({part}_ms and batch_size), the version that served it."""

    def replay(self, bytes_written: int) -> None:
        """The replay writer's byte count so far."""

    def slow_uploads(self, in_progress: int) -> None:
        """Bodies past the upload grace period being read now."""
