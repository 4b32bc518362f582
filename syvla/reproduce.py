"""The paper's tables in simulation: run sizes, the paper's numbers, verdicts and the results page.

`pipelines/reproduce.py` runs the cells (one per table row); this module holds what does not need
Ray: the `Scale` presets, the rows of each table with the paper's figure, the direction verdict of
a row against its reference row (paired: the same held-out layouts and flow noise, or the same VQA
questions; exact McNemar test), and the markdown page with its plots.

Verdicts. A row the paper puts below its reference agrees when ours is lower with p < 0.05, disagrees
when ours is higher with p < 0.05, and is inconclusive otherwise. A row the paper puts level with its
reference (Table 4's 3-15% band, Table 5 from 15 tokens) agrees when no difference is significant and
disagrees when one is. A row the paper puts above its reference works the other way round.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

SIGNIFICANCE = 0.05


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of every run of one scale."""

    task: str  # the one long task of Tables 3-6
    demos: int  # expert demos of the task (pretraining and fine-tuning data, RL's imitation set)
    pretrain_steps: int
    finetune_steps: int
    rl_episodes: int  # App. A: at most 10
    rollouts: int  # per RL episode; App. A: at most 20
    retriever_steps: int
    control_steps: int  # "w/o RL": fine-tuning steps on as many new demos as RL had rollouts
    eval_episodes: int  # held-out layouts per evaluation (paired across every cell)
    taus: tuple[float, ...]  # Table 4
    query_tokens: tuple[int, ...]  # Table 5
    seeds: int  # Table 6
    vqa_episodes: int  # sim VQA scenes per task (training split)
    vqa_heldout: int  # held-out scenes per task
    max_steps: int = 300  # env steps per episode
    think: bool = True  # Think-Before-Act at inference for the rows trained with CoT
    small: tuple[str, ...] = ()  # extra training flags (tiny sizes)
    rl_small: tuple[str, ...] = ()  # extra pipelines/rl.py flags (tiny sizes)
    skip: frozenset = frozenset()  # cells this scale does not run (the page says so)
    note: str = ""


TAUS = (0.0, 0.03, 0.05, 0.08, 0.10, 0.15, 0.20)
QUERY_TOKENS = (5, 10, 15, 20, 25, 30)
SCALES = {
    "tiny": Scale("reach-v3", demos=2, pretrain_steps=2, finetune_steps=2, rl_episodes=1, rollouts=2, retriever_steps=2,
                  control_steps=2, eval_episodes=2, taus=(0.0, 0.05, 0.20), query_tokens=(5, 20), seeds=2,
                  vqa_episodes=1, vqa_heldout=1, max_steps=30,
                  small=("--global_batch_size", "8", "--checkpoint_every", "2", "--log_every", "1",
                         "--scale.num_workers", "1"),
                  rl_small=("--update_steps", "2", "--minibatch_size", "8", "--value_warmup_steps", "4",
                            "--value_steps", "2"),
                  # Two RL rows check the RL cells (and their resume); the other RL ablations are the same
                  # cell with other rl.py flags, tested in tests/rl, and run at the cpu and gpu scales.
                  skip=frozenset({"t3-no-id", "t3-no-expert", "t3-no-similar", "t3-std-adv"}),
                  note="toy sizes: checks the machinery (cells, resume, page); its numbers are not evidence"),
    "cpu": Scale("push-v3", demos=20, pretrain_steps=600, finetune_steps=400, rl_episodes=10, rollouts=20,
                 retriever_steps=2000, control_steps=200, eval_episodes=50, taus=TAUS, query_tokens=QUERY_TOKENS,
                 seeds=5, vqa_episodes=8, vqa_heldout=4,
                 note="debug preset on a 2-core CPU: a few hours for Tables 3, 4 and VQA"),
    "gpu": Scale("push-v3", demos=50, pretrain_steps=3000, finetune_steps=1500, rl_episodes=10, rollouts=20,
                 retriever_steps=4000, control_steps=500, eval_episodes=100, taus=TAUS, query_tokens=QUERY_TOKENS,
                 seeds=5, vqa_episodes=20, vqa_heldout=8,
                 small=("--scale.use_gpu", "true", "--scale.num_workers", "1"),
                 note="debug preset, longer runs, 100 held-out layouts; one GPU"),
}
TABLES = ("3", "4", "5", "6", "vqa")


@dataclasses.dataclass(frozen=True)
class Row:
    key: str  # cell name
    label: str
    paper: float | None  # the paper's figure (success rate or VQA accuracy)
    direction: str  # vs the reference row: "lower", "level", "higher", "" (the reference itself)


def table_rows(table: str, scale: Scale) -> list[Row]:
    if table == "3":
        return [Row("t3-full", "SyVLA (all)", 0.86, ""),
                Row("t3-no-cot", "w/o CoT (and w/o Intention Decoupling, as the paper's)", 0.79, "lower"),
                Row("t3-no-id", "w/o Intention Decoupling", 0.43, "lower"),
                Row("t3-no-rl", "w/o RL (more imitation)", 0.71, "lower"),
                Row("t3-no-expert", "w/o Expert Dataset", 0.21, "lower"),
                Row("t3-no-similar", "w/o Similar Sample", 0.79, "lower"),
                Row("t3-std-adv", "w/ Standard Advantage", 0.00, "lower"),
                Row("t3-imitation", "fine-tuned, before RL (not in the paper's table)", None, "lower")]
    if table == "4":
        paper = {0.0: 0.43, 0.03: 0.73, 0.05: 0.86, 0.08: 0.77, 0.10: 0.86, 0.15: 0.82, 0.20: 0.64}
        return [Row(tau_cell(t), f"tau = {100 * t:g}%", paper.get(t),
                    "" if t == 0.05 else ("level" if 0.03 <= t <= 0.15 else "lower")) for t in scale.taus]
    if table == "5":
        paper = {5: 0.39, 10: 0.65, 15: 0.78, 20: 0.86, 25: 0.83, 30: 0.87}
        return [Row(n_cell(n), f"N = {n}", paper.get(n), "" if n == 20 else ("lower" if n < 15 else "level"))
                for n in scale.query_tokens]
    if table == "6":
        return [Row(seed_cell(s), f"seed {s}", None, "") for s in range(scale.seeds)]
    if table == "vqa":
        return [Row("vqa-pretrain-mixed", "pretrained, 35% VQA mixed in", None, ""),
                Row("vqa-pretrain-robot-only", "pretrained on robot data only", None, "lower"),
                Row("vqa-finetune-mixed", "fine-tuned, 30% VQA mixed in", None, ""),
                Row("vqa-finetune-robot-only", "fine-tuned on robot data only (from the mixed pretraining)", None,
                    "lower"),
                Row("vqa-finetune-no-id", "fine-tuned, 30% mixed, w/o Intention Decoupling", None, "lower")]
    raise ValueError(f"unknown table {table!r}; tables are {', '.join(TABLES)}")


def tau_cell(tau: float) -> str:
    return f"t4-tau-{100 * tau:g}"


def n_cell(n: int) -> str:
    return f"t5-n-{n}"


def seed_cell(seed: int) -> str:
    return f"t6-seed-{seed}"


def reference(table: str, rows: Sequence[Row], key: str) -> str | None:
    """The row `key` is compared with: Table 3 and 4/5 against their reference row; VQA rows against
    the mixed run of their stage."""
    if table == "vqa":
        return "vqa-pretrain-mixed" if key.startswith("vqa-pretrain") else "vqa-finetune-mixed"
    ref = next((r.key for r in rows if r.direction == ""), None)
    return None if ref == key else ref


def verdict(direction: str, comparison: dict | None) -> str:
    """`comparison`: syvla.intervals.paired_comparison(reference, row)."""
    if not direction or comparison is None:
        return ""
    diff, p = comparison["difference"], comparison["mcnemar_p"]
    significant = p < SIGNIFICANCE
    if direction == "level":
        return "disagrees (differs, p = %.3f)" % p if significant else "agrees (no significant difference)"
    want = -1 if direction == "lower" else 1
    if significant and diff * want > 0:
        return f"agrees ({direction}, p = {p:.3f})"
    if significant:
        return f"disagrees ({'higher' if want < 0 else 'lower'}, p = {p:.3f})"
    return f"inconclusive at this scale (p = {p:.2f})"


def fmt_rate(d: dict | None) -> str:
    """A SuccessRate dict -> 'k/n = x% (95% CI lo%-hi%)'."""
    from syvla.intervals import SuccessRate

    return str(SuccessRate.from_dict(d)) if d else "not run"


def seed_spread(rates: Sequence[float]) -> dict:
    """Mean and sample standard deviation of success over seeds."""
    n = len(rates)
    mean = sum(rates) / n if n else float("nan")
    std = math.sqrt(sum((r - mean) ** 2 for r in rates) / (n - 1)) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "std": std}


def binomial_std(rate: float, n: int) -> float:
    """The standard deviation one evaluation of n episodes has by chance alone at success `rate`."""
    return math.sqrt(max(rate * (1 - rate), 0.0) / n) if n else float("nan")
