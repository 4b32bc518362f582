"""A simulated operator: labels served episodes through the operator page's API, as a person at the page would.

The simulator knows each episode's outcome (`info["success"]`); a person does not see it, so the
robot side hands outcomes over (`tell`) and the operator labels the episodes the page lists, with
a configurable error rate (a flipped label), so the whole real-robot loop, blind evaluation
included, runs on the CPU:

    op = SimulatedOperator("http://127.0.0.1:8000", error_rate=0.05, seed=0)
    op.tell(result.episode_id, result.success)      # from each finished sim episode
    op.label_ready()                                # labels what the page lists and it knows

It speaks HTTP only (no syvla.serving import), like the page's JavaScript.
"""

from __future__ import annotations

import dataclasses
import random
import threading

import httpx


@dataclasses.dataclass(frozen=True)
class Label:
    episode_id: str
    truth: bool  # the simulator's verdict
    reward: int  # what the operator posted (differs from truth with probability error_rate)


class SimulatedOperator:
    def __init__(self, url: str, error_rate: float = 0.0, seed: int = 0, api_key: str = "",
                 http: httpx.Client | None = None, timeout_s: float = 30.0):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"SimulatedOperator.error_rate must be in [0, 1], got {error_rate}")
        self.url, self.error_rate = url.rstrip("/"), float(error_rate)
        self._rng = random.Random(seed)
        self._http = http or httpx.Client(timeout=timeout_s)
        self._headers = {"x-api-key": api_key} if api_key else {}
        self._outcomes: dict[str, bool] = {}
        self._lock = threading.Lock()
        self.labels: list[Label] = []

    def tell(self, episode_id: str, success: bool) -> None:
        """The simulator's verdict for a finished episode (the operator 'watched' it)."""
        with self._lock:
            self._outcomes[episode_id] = bool(success)

    def label_ready(self) -> int:
        """Label every listed episode whose outcome is known; returns how many were labelled."""
        resp = self._http.get(self.url + "/operator/api/episodes", headers=self._headers)
        resp.raise_for_status()
        done = 0
        for ep in resp.json()["episodes"]:
            eid = ep["episode_id"]
            with self._lock:
                truth = self._outcomes.pop(eid, None)
            if truth is None:
                continue
            reward = int(truth) if self._rng.random() >= self.error_rate else 1 - int(truth)
            r = self._http.post(self.url + "/operator/api/label", json={"episode_id": eid, "reward": reward},
                                headers=self._headers)
            r.raise_for_status()
            self.labels.append(Label(eid, truth, reward))
            done += 1
        return done

    @property
    def waiting(self) -> int:
        """Outcomes told but not labelled yet (their episode is not listed yet)."""
        with self._lock:
            return len(self._outcomes)

    def close(self) -> None:
        self._http.close()
