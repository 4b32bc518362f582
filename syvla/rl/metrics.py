"""RL metrics: one flat dict per RL episode, `metrics.json` and a success-rate PNG in the run directory.

Per episode: success rate of the version that collected the rollouts, rollouts and
steps used, episodes skipped for lack of a reward, retrieval similarity, the
trust-region signals of the update (clip fraction, min/max ratio; ../shared/notes/rl.md:
"they tell whether the trust region is right"), value loss, and stage timings.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from syvla.runstate import write_json

METRICS_FILE = "metrics.json"
PLOT_FILE = "success_rate.png"


def episode_metrics(episode: int, version: int, new_version: int, collected, batch, similarity: float, values,
                    policy_stats: dict, value_stats: dict, timings: dict) -> dict:
    rep = collected.report()
    values = np.asarray(values, np.float32)
    return {
        "episode": episode, "version": version, "published_version": new_version,
        "success_rate": rep["success_rate"], "rollouts": rep["rollouts"],
        "skipped_without_reward": rep["waiting_for_reward"], "skipped_stale": rep["stale"],
        "skipped_invalid": len(rep["invalid"]), "collect_waited_s": rep["waited_s"],
        "retrieval_similarity": similarity,
        **batch.summary(),
        "value_mean": float(values.mean()) if values.size else math.nan,
        **policy_stats, **value_stats, **timings,
    }


def write_report(run_dir: str | Path, state) -> Path:
    """metrics.json (warm-up, every episode, final) and success_rate.png; returns the JSON path."""
    run_dir = Path(run_dir)
    out = run_dir / METRICS_FILE
    report = {"base_version": state.base_version, "version": state.version, "episodes_done": state.episode,
              "ablation": state.config.get("ablation", ""), "value_warmup": state.warmup,
              "episodes": state.metrics, "final": state.final,
              "success_by_version": success_by_version(state)}
    write_json(out, report)
    plot_success(state, run_dir / PLOT_FILE)
    return out


def success_by_version(state) -> dict[str, float]:
    out = {str(m["version"]): m["success_rate"] for m in state.metrics}
    if state.final:
        out[str(state.final["version"])] = state.final["success_rate"]
    return out


def plot_success(state, path: str | Path) -> Path | None:
    points = [(m["episode"], m["version"], m["success_rate"], m["rollouts"]) for m in state.metrics]
    if state.final:
        points.append((len(state.metrics), state.final["version"], state.final["success_rate"],
                       state.final["rollouts"]))
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    xs, ys = [p[0] for p in points], [p[2] for p in points]
    ax.plot(xs, ys, marker="o")
    for x, v, y, n in points:
        ax.annotate(f"v{v} (n={n})", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("RL episode (last point: final version)" if state.final else "RL episode")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.1)
    ax.set_title(f"RL success per episode (ablation: {state.config.get('ablation', '?')})", fontsize=9)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

