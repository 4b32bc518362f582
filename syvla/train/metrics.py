"""Training metrics: a console line, TensorBoard scalars, a JSONL history and a PNG of the loss curves.

Only rank 0 writes. The JSONL history lives beside the TensorBoard files, so a
resumed run appends to it and the final plot covers the whole run (for a step
logged twice, before and after a restart, the later entry wins).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HISTORY = "metrics.jsonl"
PLOT = "loss_curves.png"
TB_DIR = "tensorboard"

# Scalars every log line carries (TensorBoard tags are "train/<name>").
SCALARS = ("loss", "action_loss", "lm_loss", "masked_fraction", "lr", "grad_norm", "samples_per_s", "data_wait_share")


def write_line(line: str, stream=None) -> None:
    """Write one console line from a Ray Train worker exactly once.

    Ray Train patches `print` in workers to copy each line to its logger and, when Ray has wrapped
    stdout, also to the stream itself: the driver showed every step line twice. Writing to the
    stream directly sends it once.
    """
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


class Window:
    """Accumulates per-step values between two log lines; means and rates over the window."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.samples = 0
        self.wait_s = 0.0
        self.start = time.perf_counter()

    def add(self, values: dict[str, float], samples: int, wait_s: float) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.steps += 1
        self.samples += samples
        self.wait_s += wait_s

    def summary(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {k: v / max(self.steps, 1) for k, v in self.sums.items()}
        out["samples_per_s"] = self.samples / elapsed
        out["data_wait_share"] = min(self.wait_s / elapsed, 1.0)
        return out


class MetricsLogger:
    """Console + TensorBoard + JSONL for one run directory. Inactive (no-op) when `active` is false."""

    def __init__(self, log_dir: str | Path | None, active: bool = True, total_steps: int | None = None, stream=None):
        self.active = bool(active and log_dir)
        self.total_steps = total_steps
        self.stream = stream or sys.stdout
        self._writer = None
        self.log_dir = Path(log_dir) if log_dir else None
        if self.active:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir / TB_DIR))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """One console line, TensorBoard scalars and a metrics.jsonl row for `step` (rank 0 only)."""
        if not self.active:
            return
        total = f"/{self.total_steps}" if self.total_steps else ""
        parts = [f"step {step}{total}"]
        for key, fmt in (("loss", ".4f"), ("action_loss", ".4f"), ("lm_loss", ".4f"), ("masked_fraction", ".3f"),
                         ("lr", ".2e"), ("grad_norm", ".3f"), ("samples_per_s", ".1f"), ("data_wait_share", ".0%")):
            if key in metrics:
                parts.append(f"{key} {metrics[key]:{fmt}}")
        write_line(" | ".join(parts), self.stream)
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self._writer.add_scalar(f"train/{key}", value, step)
        self._writer.flush()
        with open(self.log_dir / HISTORY, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")

    def close(self, plot: bool = True) -> Path | None:
        if not self.active:
            return None
        self._writer.close()
        return plot_history(self.log_dir / HISTORY, self.log_dir / PLOT) if plot else None


def read_history(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl in step order; the last entry for a step wins (restarts re-log steps)."""
    path = Path(path)
    if not path.exists():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def plot_history(history: str | Path, out: str | Path) -> Path | None:
    """PNG with the action (flow-matching) loss, LM loss, masked fraction and throughput over steps."""
    rows = read_history(history)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key in ("action_loss", "lm_loss"):
        if any(key in r for r in rows):
            axes[0].plot(steps, [r.get(key, float("nan")) for r in rows], label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("losses")
    axes[0].legend()
    axes[1].plot(steps, [r.get("lr", float("nan")) for r in rows], color="tab:green")
    axes[1].set_title("learning rate")
    axes[2].plot(steps, [r.get("samples_per_s", float("nan")) for r in rows], color="tab:purple")
    axes[2].set_title("samples / s")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
