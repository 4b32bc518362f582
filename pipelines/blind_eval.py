"""Blind comparison of K checkpoints behind one endpoint: nobody running or judging an episode knows which policy ran it.

    python pipelines/blind_eval.py --checkpoints CKPT_A CKPT_B --task push-v3 --episodes 50 --robots 2
    python pipelines/blind_eval.py --checkpoints CKPT_A CKPT_B --robots 0 --operator page --episodes 40   # real robots

Serves the checkpoints as one blind Serve app (syvla/serving/blind.py): each new episode goes to a
checkpoint by a balanced, grouped random schedule; robots and the operator page see opaque episode
ids only. Labels come from the operator page (--operator page: people at <url>/operator) or from the
simulated operator (--operator sim: the simulator's verdict, wrong with probability --error_rate).
Simulated robots (--robots N > 0) run Meta-World's held-out layouts (seed 100000 + k) and never post
rewards themselves; with --robots 0 your robots drive the endpoint. Once --episodes episodes are
labelled, the report un-blinds from the replay buffer: success per checkpoint with 95% Wilson
intervals and the full schedule (--output/report.json, report.md). With simulated robots it also
evaluates each checkpoint in process on the layouts the schedule gave it (same layouts, same noise),
and says whether the blind figures agree. Every BlindEvalConfig field is a flag.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling pipelines (common)

import syvla  # noqa: E402,F401  (installs the torchvision shim first, as in every syvla process)
from common import RayConfig, connect_ray  # noqa: E402
from syvla.cli import field, parse_configs  # noqa: E402
from syvla.sim import metaworld as mw  # noqa: E402


@dataclasses.dataclass(frozen=True)
class BlindEvalConfig:
    """`pipelines/blind_eval.py`: which checkpoints, how many episodes, who drives and who judges."""

    checkpoints: tuple[str, ...] = field((), "the K >= 2 checkpoint directories compared blind")
    task: str = field("push-v3", "Meta-World task of the simulated robots")
    episodes: int = field(50, "labelled episodes in all, balanced over the checkpoints by the schedule")
    robots: int = field(2, "simulated robot processes; 0 = your robots drive the endpoint")
    operator: str = field("sim", "who labels: sim (the simulator's verdict) or page (people at <url>/operator)")
    error_rate: float = field(0.0, "simulated operator: probability that a label is flipped")
    seed: int = field(0, "seed of the blind schedule and of the simulated operator's errors")
    max_steps: int = field(300, "simulated robots: env steps per episode")
    execute_steps: int = field(10, "simulated robots: actions executed per chunk")
    image_size: int = field(64, "simulated robots: camera pixels")
    in_process: bool = field(True, "also evaluate each checkpoint in process on the layouts it was given")
    output: str = field("runs/blind_eval", "report.json, report.md and replay/ go here (a new or empty directory)")
    host: str = field("127.0.0.1", "HTTP host of the endpoint")
    port: int = field(8000, "HTTP port of the endpoint")
    api_key: str = field("", "API key robots and the operator page must send; '' = open")
    timeout_s: float = field(3600.0, "give up (and report what is labelled) after this many seconds")
    min_latency_ms: float = field(0.0, "every act answer waits until this many ms after arrival, so arms of "
                                       "different speed answer alike (ServeConfig.blind_min_ms)")
    undo_window_s: float = field(30.0, "seconds the operator page may withdraw a label; a label counts after it")

    def __post_init__(self):
        object.__setattr__(self, "checkpoints", tuple(self.checkpoints))
        if len(self.checkpoints) == 1:
            raise ValueError(f"BlindEvalConfig.checkpoints must name at least 2 checkpoints, got {list(self.checkpoints)}")
        if self.task not in mw.TASK_INSTRUCTIONS:
            raise ValueError(f"BlindEvalConfig.task: unknown Meta-World task {self.task!r}")
        if self.operator not in ("sim", "page"):
            raise ValueError(f"BlindEvalConfig.operator must be sim or page, got {self.operator!r}")
        if self.operator == "sim" and self.robots <= 0:
            raise ValueError("BlindEvalConfig.operator sim needs simulated robots (--robots > 0): it knows only "
                             "the simulator's outcomes")
        for name in ("episodes", "port", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BlindEvalConfig.{name} must be > 0, got {getattr(self, name)}")
        if min(self.robots, self.undo_window_s, self.min_latency_ms) < 0 or not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("BlindEvalConfig.robots, undo_window_s and min_latency_ms must be >= 0, "
                             "error_rate in [0, 1]")


def check_inputs(cfg: BlindEvalConfig) -> Path:
    """On the driver, before anything starts: the checkpoints exist, the output is new or empty."""
    from syvla.model.checkpoint import is_checkpoint_dir

    if not cfg.checkpoints:
        raise SystemExit("blind_eval: give the checkpoints to compare: --checkpoints CKPT_A CKPT_B [...]")
    for ckpt in cfg.checkpoints:
        if not is_checkpoint_dir(Path(ckpt)):
            raise SystemExit(f"blind_eval: --checkpoints {ckpt!r} is not a checkpoint directory")
    out = Path(cfg.output).resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"blind_eval: --output {out} is not empty; pick a new directory (nothing was written)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_robots(cfg: BlindEvalConfig, url: str, operator, log=print) -> list:
    """Simulated robots on held-out layouts, one episode per job; each outcome goes to the operator as it ends."""
    import functools
    import multiprocessing as mp

    from syvla.sim.episodes import Endpoint, run_robot
    from syvla.sim.trusted import trusted_episodes

    episodes = trusted_episodes(cfg.task, cfg.episodes, max_steps=cfg.max_steps, execute_steps=cfg.execute_steps,
                                image_size=cfg.image_size)
    endpoint = Endpoint(url=url, api_key=cfg.api_key, post_rewards=False)  # the operator judges, not the robot
    jobs = [(cfg.task, episodes.seed + k) for k in range(cfg.episodes)]
    results = []
    with mp.get_context("spawn").Pool(cfg.robots) as pool:
        # A function of the library, not of this script: spawned workers import it by name.
        for part in pool.imap_unordered(functools.partial(run_robot, endpoint, episodes), [[job] for job in jobs]):
            for ep in part:
                results.append(ep)
                if operator is not None:
                    operator.tell(ep.episode_id, ep.success)
                    operator.label_ready()
                log(f"[blind_eval] robot episode {len(results)}/{len(jobs)} done (layout {ep.seed})")
    return sorted(results, key=lambda ep: ep.seed)


def wait_for_labels(replay_dir: Path, n: int, deadline: float, operator=None, log=print) -> list:
    """Blind episodes from the replay buffer once n carry a settled label (or at the deadline); the buffer is
    followed incrementally, not re-read."""
    from syvla.serving.replay_buffer import Episode, ReplayReader

    reader, cursor, episodes, last = ReplayReader(replay_dir), {}, {}, -1
    while True:
        if operator is not None:
            operator.label_ready()
        records, cursor = reader.poll(cursor, decode=False)
        for record in records:
            if isinstance(record.get("episode_id"), str):
                episodes.setdefault(record["episode_id"], Episode(record["episode_id"])).add(record)
        eps = [e for e in episodes.values() if e.blind is not None]
        labelled = sum(1 for e in eps if e.settled())
        if labelled != last:
            log(f"[blind_eval] {labelled}/{n} episodes labelled (final once past the undo window)")
            last = labelled
        if labelled >= n or time.time() > deadline:
            return eps
        time.sleep(1.0)


def in_process_check(cfg: BlindEvalConfig, report: dict, robot_results: list, log=print) -> dict:
    """Each checkpoint in process on exactly the layouts (and noise) the schedule gave it."""
    from syvla.intervals import success_rate
    from syvla.model.policy import Policy
    from syvla.sim.episodes import EpisodeConfig, LocalPolicy, run_episodes

    layout_of = {ep.episode_id: ep.seed for ep in robot_results}
    served = {ep.seed: ep.success for ep in robot_results}  # the outcome each layout had through the endpoint
    out = {}
    for arm in report["arms"]:
        v = arm["version"]
        layouts = sorted(layout_of[s["episode"]] for s in report["schedule"]
                         if s["version"] == v and s["reward"] is not None and s["episode"] in layout_of)
        ep_cfg = EpisodeConfig(tasks=(cfg.task,), episodes=len(layouts), max_steps=cfg.max_steps,
                               execute_steps=cfg.execute_steps, image_size=cfg.image_size)
        results = run_episodes(LocalPolicy(Policy.load(arm["checkpoint"])), ep_cfg,
                               [(cfg.task, seed) for seed in layouts]) if layouts else []
        rate = success_rate([r.success for r in results])
        blind = arm["success"]
        agree = not (rate.high < blind["low"] or rate.low > blind["high"])
        out[str(v)] = {"layouts": layouts, "success": rate.to_dict(), "agrees_with_blind": agree,
                       "same_outcome": sum(1 for r in results if served[r.seed] == r.success)}
        log(f"[blind_eval] in process, checkpoint {v}: {rate} on its {len(layouts)} layouts "
            f"({'agrees' if agree else 'DISAGREES'} with the blind figure)")
    return out


def write_report(out: Path, cfg: BlindEvalConfig, report: dict) -> None:
    from syvla.intervals import SuccessRate

    (out / "report.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), **report}, indent=1, default=str))
    lines = [f"# Blind evaluation: {cfg.task}, {report['episodes']} episodes "
             f"({report['unlabelled']} unlabelled), operator {cfg.operator}", "",
             "| version | checkpoint | labelled | success (95% Wilson) | in process, same layouts |",
             "|---|---|---|---|---|"]
    for arm in report["arms"]:
        s = arm["success"]
        local = report.get("in_process", {}).get(str(arm["version"]))
        local_txt = str(SuccessRate(local["success"]["successes"], local["success"]["n"])) if local else "-"
        lines.append(f"| {arm['version']} | {arm['checkpoint']} | {arm['labelled']} | "
                     f"{SuccessRate(s['successes'], s['n'])} | {local_txt} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    cfg, ray_cfg = parse_configs(argv, __doc__, BlindEvalConfig(), RayConfig())
    out = check_inputs(cfg)
    replay_dir = out / "replay"
    from syvla.serving.blind import unblind
    from syvla.serving.config import DeploymentConfig, ServeConfig
    from syvla.serving.launch import ServeRunConfig, serve_policy

    k = len(cfg.checkpoints)
    server = ServeConfig(blind_checkpoints=tuple(str(Path(c).resolve()) for c in cfg.checkpoints),
                         blind_seed=cfg.seed, keep_versions=max(2, k), weight_poll_s=0.0,
                         replay_dir=str(replay_dir), api_key=cfg.api_key, undo_window_s=cfg.undo_window_s,
                         blind_min_ms=cfg.min_latency_ms)
    run = ServeRunConfig(deployment=DeploymentConfig(num_replicas=1), host=cfg.host, port=cfg.port,
                         app_name="syvla-blind", blocking=False)
    connect_ray(ray_cfg.address, ray_cfg.num_cpus)
    from ray import serve

    operator = None
    try:
        url = serve_policy(run, server)
        print(f"[blind_eval] {k} checkpoints served blind at {url}; operator page: {url}/operator", flush=True)
        if cfg.operator == "sim":
            from syvla.sim.operator import SimulatedOperator

            operator = SimulatedOperator(url, error_rate=cfg.error_rate, seed=cfg.seed, api_key=cfg.api_key)
        deadline = time.time() + cfg.timeout_s
        robot_results = run_robots(cfg, url, operator) if cfg.robots else []
        # Labels become final after the undo window (server.undo_window_s); wait for it in simulation too.
        eps = wait_for_labels(replay_dir, cfg.episodes, deadline + server.undo_window_s, operator)
    finally:
        serve.shutdown()
        if operator is not None:
            operator.close()
    report = unblind(eps, list(cfg.checkpoints))
    for arm in report["arms"]:
        from syvla.intervals import SuccessRate

        s = arm["success"]
        print(f"[blind_eval] un-blinded: version {arm['version']} ({arm['checkpoint']}): "
              f"success {SuccessRate(s['successes'], s['n'])}", flush=True)
    if operator is not None:
        report["operator_errors"] = sum(1 for lab in operator.labels if lab.reward != int(lab.truth))
    if robot_results and cfg.in_process:
        report["in_process"] = in_process_check(cfg, report, robot_results)
    write_report(out, cfg, report)
    print(f"[blind_eval] report: {out / 'report.md'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
