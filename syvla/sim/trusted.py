"""The evaluation RL figures are read from: held-out layouts, paired across checkpoints, with intervals.

    before = evaluate_policy(Policy.load(base), trusted_episodes("push-v3"))
    after = evaluate_policy(Policy.load(improved), trusted_episodes("push-v3"))
    gain = paired_gain(before, after)     # rates with 95% Wilson intervals, discordant pairs, McNemar p

Layouts: episode k of a task uses layout seed EVAL_SEED + k. Demonstrations are collected on
layout seeds drawn from [0, 2**31) by `syvla.sim.collect.episode_plan`, RL robots use
RLRunConfig.seed + k (1000 + k by default), so `check_disjoint` refuses an overlap instead of
trusting chance. Flow noise: each act call's noise seed is a function of the layout seed and the
step (`syvla.sim.episodes.act_seed`), so two checkpoints see the same layouts *and* the same noise,
in process and through the endpoint alike, and their outcomes can be compared pair by pair.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from syvla.sim.episodes import EpisodeConfig

EVAL_SEED = 100_000  # layout seed of held-out evaluation episode 0
EVAL_EPISODES = 50  # per task: a 95% Wilson interval of about +-13 points at 50%


def trusted_episodes(tasks: str | Sequence[str], episodes: int = EVAL_EPISODES, **overrides) -> EpisodeConfig:
    """The held-out evaluation episodes of `tasks` (EpisodeConfig overrides: max_steps, execute_steps, ...)."""
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    return EpisodeConfig(tasks=tasks, episodes=episodes, seed=overrides.pop("seed", EVAL_SEED), **overrides)


def check_disjoint(eval_cfg: EpisodeConfig, used_seeds: Iterable[int], what: str) -> None:
    """Raise ValueError when a layout seed of `what` (training demos, RL rollouts) is an evaluation layout."""
    evaluation = set(range(eval_cfg.seed, eval_cfg.seed + eval_cfg.episodes))
    overlap = sorted(evaluation.intersection(int(s) for s in used_seeds))
    if overlap:
        raise ValueError(f"{what} use evaluation layout seeds {overlap[:5]}{'...' if len(overlap) > 5 else ''}: "
                         f"held-out layouts must be disjoint; move one of them (evaluation seed {eval_cfg.seed})")


def paired_outcomes(before: dict, after: dict) -> tuple[list[bool], list[bool]]:
    """Outcomes of the episodes both summaries (syvla.sim.episodes.summarize) ran, in (task, seed) order.
    Raises when the two did not run the same layouts with the same noise."""
    def by_key(summary):
        return {(r["task"], r["seed"]): r for r in summary["results"] if not r.get("aborted")}

    a, b = by_key(before), by_key(after)
    if set(a) != set(b):
        raise ValueError(f"the two evaluations ran different episodes ({len(set(a) ^ set(b))} unpaired): "
                         f"evaluate both on the same EpisodeConfig")
    keys = sorted(a)
    unpaired = [k for k in keys if a[k]["noise_seed"] != b[k]["noise_seed"]]
    if unpaired:
        raise ValueError(f"episodes {unpaired[:3]} used different flow noise: not a paired comparison")
    return [bool(a[k]["success"]) for k in keys], [bool(b[k]["success"]) for k in keys]


def paired_gain(before: dict, after: dict) -> dict:
    """syvla.intervals.paired_comparison of two evaluations of the same episodes, plus `gain_points`."""
    from syvla.intervals import paired_comparison

    out = paired_comparison(*paired_outcomes(before, after))
    out["gain_points"] = 100.0 * (out["b"]["rate"] - out["a"]["rate"])
    return out
