"""Reproduce the paper's ablations and sensitivity studies in Meta-World, and write the results page.

    python pipelines/reproduce.py --scale tiny --tables 3,4,5,6,vqa        # every table at toy size, minutes
    python pipelines/reproduce.py --scale cpu --tables 3,4,vqa --page docs/results.md   # 2-core CPU, hours
    python pipelines/reproduce.py --scale gpu --page docs/results.md                   # GPU sizes

A matrix of cells, one per table row (syvla/reproduce.py lists them with the paper's figures), run one
after another on one Ray cluster (--address, else a local instance): each cell calls the pipelines a user
would run (collect_sim, make_sim_vqa, prepare_data, pretrain, finetune, train_retriever, rl, evaluate)
in-process. The cells share one base where the paper shares one: the demos, the sim VQA set, the
pretraining (35% VQA mixed in) and the fine-tuned imitation policy (30% mixed in), which is also Table 4's
tau = 5%, Table 5's N = 20 and Table 6's seed 0. Every success figure is the paired held-out evaluation
(syvla.sim.trusted: the same --scale eval_episodes layouts and flow noise for every cell, 95% Wilson
interval); VQA rows are exact match on the held-out sim scenes, paired by question.

Resumable: a finished cell's result is work/cells/<cell>.json and is never redone; a killed cell resumes
inside its pipelines (training and RL runs resume by name, finished checkpoints are reused). --max_cells N
stops after N cells (a budget); the page is written after every cell, with the cells done so far.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from common import RayConfig, connect_ray  # noqa: E402
from syvla import reproduce as R  # noqa: E402
from syvla.cli import field, parse_configs  # noqa: E402

PAGE_MARK = "<!-- written by pipelines/reproduce.py: re-running the command rewrites this page -->"
RL_SEED = 1000  # RL robots' layouts; the evaluation's are syvla.sim.trusted.EVAL_SEED + k


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    tables: str = field("3,4,5,6,vqa", "comma-separated tables: 3 (ablations), 4 (tau), 5 (query tokens N), "
                                       "6 (seeds), vqa (vision-language retention)")
    scale: str = field("cpu", "run sizes: tiny (minutes, not evidence), cpu (a 2-core machine, hours), gpu")
    work: str = field("", "every output of the run ('' = runs/reproduce/<scale>); the same folder resumes")
    page: str = field("", "the results page ('' = <work>/results.md); plots go to <page folder>/results/")
    max_cells: int = field(0, "stop after this many cells ran in this invocation (0 = all); re-run to go on")
    port: int = field(8020, "HTTP port of the RL runs' Serve endpoint")
    page_only: bool = field(False, "rewrite the page from the finished cells in <work>/cells and run nothing")

    def __post_init__(self):
        if self.scale not in R.SCALES:
            raise ValueError(f"ReproduceConfig.scale must be one of {sorted(R.SCALES)}, got {self.scale!r}")
        bad = [t for t in self.table_list if t not in R.TABLES]
        if bad or not self.table_list:
            raise ValueError(f"ReproduceConfig.tables: unknown {bad or 'empty'}; tables are {', '.join(R.TABLES)}")
        if self.max_cells < 0:
            raise ValueError(f"ReproduceConfig.max_cells must be >= 0, got {self.max_cells}")

    @property
    def table_list(self) -> list[str]:
        return [t.strip() for t in self.tables.split(",") if t.strip()]


def git_commit(page: Path) -> str:
    """HEAD's short hash, '+changes' when tracked files differ from it. The results `page` and its plots
    folder are left out: this command writes them, and they do not change the code a cell ran."""
    own = [q.resolve() for q in (page, page.parent / "results")]
    excludes = [f":(exclude){q.relative_to(ROOT)}" for q in own if q.is_relative_to(ROOT)]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", *excludes], cwd=ROOT).returncode != 0
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def check_page(page: Path) -> None:
    if page.exists() and PAGE_MARK not in page.read_text(errors="replace"):
        raise FileExistsError(f"--page {page} exists and was not written by reproduce.py; it is left as it is")


class Runs:
    """The shared steps: each builds its output once (skipped when it exists) through a pipeline's main()."""

    def __init__(self, cfg: ReproduceConfig, work: Path, log):
        from syvla.train.config import preset

        self.cfg, self.s, self.work, self.log = cfg, R.SCALES[cfg.scale], work, log
        self.chunk_len = preset("pretrain-debug").model.expert.chunk_len
        self.commands: list[str] = []

    def call(self, module: str, *argv) -> None:
        import importlib

        argv = [str(a) for a in argv]
        line = f"python pipelines/{module}.py " + " ".join(argv)
        self.commands.append(line)
        self.log(f"$ {line}")
        rc = importlib.import_module(module).main(argv)
        if rc:
            raise RuntimeError(f"{module}.py exited with {rc}")

    # ---- data ---------------------------------------------------------------------------------
    def raw(self, name="raw", episodes=None, seed=0) -> Path:
        out = self.work / name
        if not (out / "meta" / "info.json").exists():
            self.call("collect_sim", "--tasks", self.s.task, "--episodes_per_task", episodes or self.s.demos,
                      "--cot_fraction", "1.0", "--seed", seed, "--output", out)
        return out

    def vqa(self) -> Path:
        out = self.work / "sim_vqa"
        if not (out / "report.json").exists():
            self.call("make_sim_vqa", "--output", out, "--episodes_per_task", self.s.vqa_episodes,
                      "--heldout_episodes_per_task", self.s.vqa_heldout)
        return out

    def prepared(self, mixed: bool, raw: Path | None = None, name: str = "") -> Path:
        raw = raw or self.raw()
        out = self.work / (name or ("prepared-mixed" if mixed else "prepared-robot"))
        if not (out / "manifest.json").exists():
            inputs = [f"metaworld={raw}"] + ([f"sim_vqa={self.vqa() / 'train.json'}"] if mixed else [])
            self.call("prepare_data", "--inputs", *inputs, "--output", out, "--chunk_len", self.chunk_len)
        return out

    # ---- training -----------------------------------------------------------------------------
    def pretrain(self, mixed: bool = True, n_query: int = 20) -> Path:
        from syvla.model.checkpoint import is_checkpoint_dir

        tag = f"pretrain-{'mixed' if mixed else 'robot'}-n{n_query}"
        out = self.work / "ckpt" / tag
        if not is_checkpoint_dir(out):
            self.call("pretrain", "--name", tag, "--storage_path", self.work / "runs", "--demos.collect", "false",
                      "--data.path", self.prepared(mixed), "--data.multimodal_ratio", 0.35 if mixed else 0.0,
                      "--model.num_query_tokens", n_query, "--max_steps", self.s.pretrain_steps, "--out", out,
                      *self.s.small)
        return out

    def finetune(self, tag: str, init: Path, mixed: bool = True, flags=(), data: Path | None = None,
                 steps: int | None = None) -> Path:
        from syvla.model.checkpoint import is_checkpoint_dir

        out = self.work / "ckpt" / f"ft-{tag}"
        if not is_checkpoint_dir(out):
            self.call("finetune", "--init_from", init, "--data.path", data or self.prepared(mixed),
                      "--data.tasks", self.s.task, "--per_task", "false", "--data.multimodal_ratio",
                      0.30 if mixed else 0.0, "--name", out.name, "--storage_path", self.work / "runs",
                      "--out_dir", out.parent, "--max_steps", steps or self.s.finetune_steps, *flags, *self.s.small)
        return out

    def base(self) -> Path:
        """The shared imitation policy: mixed pretraining, mixed fine-tuning, tau 5%, N 20, seed 0."""
        return self.finetune("base", self.pretrain())

    def retriever(self) -> Path:
        out = self.work / "retriever" / "clip.pt"
        if not out.exists():
            self.call("train_retriever", "--data", self.raw(), "--tasks", self.s.task, "--output", out,
                      "--steps", self.s.retriever_steps, "--log_every", max(1, self.s.retriever_steps // 8))
        return out

    def rl(self, name: str, ckpt: Path, flags=(), think: bool | None = None) -> Path:
        run_dir = self.work / "rl" / name
        final = run_dir / "final_version.json"
        if not final.exists():
            think = self.s.think if think is None else think
            self.call("rl", "--run.name", name, "--run.runs_dir", self.work / "rl", "--run.checkpoint", ckpt,
                      "--run.tasks", self.s.task, "--run.expert_data", self.raw(), "--run.seed", RL_SEED,
                      "--run.max_steps", self.s.max_steps, "--run.think", str(think).lower(),
                      "--rl_episodes", self.s.rl_episodes, "--rollouts_per_episode", self.s.rollouts,
                      "--run.port", self.cfg.port, "--final_eval", "false", "--clip_checkpoint", self.retriever(),
                      *self.s.rl_small, *flags)
            state = json.loads((run_dir / "state.json").read_text())
            final.write_text(json.dumps({"version": state["version"],
                                         "checkpoint": state["checkpoints"][str(state["version"])]}))
        return Path(json.loads(final.read_text())["checkpoint"])

    def control(self) -> Path:
        """'w/o RL': the base fine-tuned on as many new demos as RL had rollouts (same mixing)."""
        n = self.s.rl_episodes * self.s.rollouts
        extra = self.prepared(True, raw=self.raw(f"extra-raw-{n}", episodes=n, seed=7), name=f"extra-prepared-{n}")
        return self.finetune(f"w-o-rl-{n}", self.base(), data=extra, steps=self.s.control_steps)

    # ---- measurements -------------------------------------------------------------------------
    def success(self, ckpt: Path, label: str, think: bool | None = None) -> dict:
        from syvla.sim.trusted import EVAL_SEED

        think = self.s.think if think is None else think
        out = self.work / "eval" / f"{label}{'-think' if think else ''}.json"
        if not out.exists():
            self.call("evaluate", "--checkpoint", ckpt, "--tasks", self.s.task, "--episodes", self.s.eval_episodes,
                      "--seed", EVAL_SEED, "--max_steps", self.s.max_steps, "--think", str(think).lower(),
                      "--heldout_episodes", 0, "--json", out)
        closed = json.loads(out.read_text())["closed_loop"]
        return {"kind": "success", "success": closed["success"], "closed_loop": closed, "think": think}

    def vqa_score(self, ckpt: Path, label: str) -> dict:
        out = self.work / "eval" / f"vqa-{label}.json"
        if not out.exists():
            self.call("evaluate", "--checkpoint", ckpt, "--episodes", 0, "--heldout_episodes", 0,
                      "--vqa", self.vqa() / "heldout.json", "--json", out)
        r = json.loads(out.read_text())["vqa"]
        return {"kind": "vqa", "success": r["accuracy"], "hits": r["hits"], "ids": r["ids"],
                "per_kind": r["per_kind"], "examples": r["examples"]}


def cells(runs: Runs, tables: list[str]) -> list[tuple[str, str, object]]:
    """(cell, table, fn -> result) in run order; a cell named by two tables runs once."""
    s = runs.s
    base = runs.base
    by_table = {
        "3": {
            "t3-imitation": lambda: runs.success(base(), "base"),
            "t3-full": lambda: runs.success(runs.rl("full", base()), "rl-full"),
            "t3-no-rl": lambda: runs.success(runs.control(), "w-o-rl"),
            "t3-no-expert": lambda: runs.success(runs.rl("no-expert", base(), ["--use_expert_data", "false"]),
                                                 "rl-no-expert"),
            "t3-no-similar": lambda: runs.success(runs.rl("no-similar", base(), ["--retrieval.mode", "random"]),
                                                  "rl-no-similar"),
            "t3-std-adv": lambda: runs.success(runs.rl("std-adv", base(), ["--advantage.expert_gae", "true"]),
                                               "rl-std-adv"),
            "t3-no-id": lambda: runs.success(runs.rl("no-id", runs.finetune("no-id", runs.pretrain(), flags=[
                "--model.decoupling.enabled", "false"]), ["--ablate_decoupling", "true"]), "rl-no-id"),
            # The paper's "w/o CoT" trains without Think-Before-Act and without Intention Decoupling.
            "t3-no-cot": lambda: runs.success(runs.rl("no-cot-no-id", runs.finetune("no-cot-no-id", runs.pretrain(), flags=[
                "--data.cot", "false", "--model.decoupling.enabled", "false"]), ["--ablate_decoupling", "true"],
                think=False), "rl-no-cot-no-id", think=False),
        },
        "4": {R.tau_cell(t): (lambda t=t: runs.success(
            base() if t == 0.05 else runs.finetune(f"tau-{100 * t:g}", runs.pretrain(), flags=[
                "--model.decoupling.tau", t]), "base" if t == 0.05 else f"tau-{100 * t:g}")) for t in s.taus},
        "5": {R.n_cell(n): (lambda n=n: runs.success(
            base() if n == 20 else runs.finetune(f"n-{n}", runs.pretrain(n_query=n)),
            "base" if n == 20 else f"n-{n}")) for n in s.query_tokens},
        "6": {R.seed_cell(k): (lambda k=k: runs.success(
            base() if k == 0 else runs.finetune(f"seed-{k}", runs.pretrain(), flags=["--seed", k]),
            "base" if k == 0 else f"seed-{k}")) for k in range(s.seeds)},
        "vqa": {
            "vqa-pretrain-mixed": lambda: runs.vqa_score(runs.pretrain(), "pretrain-mixed"),
            "vqa-pretrain-robot-only": lambda: runs.vqa_score(runs.pretrain(mixed=False), "pretrain-robot"),
            "vqa-finetune-mixed": lambda: runs.vqa_score(base(), "base"),
            "vqa-finetune-robot-only": lambda: runs.vqa_score(runs.finetune("robot-only", runs.pretrain(),
                                                                            mixed=False), "ft-robot-only"),
            "vqa-finetune-no-id": lambda: runs.vqa_score(runs.finetune("no-id", runs.pretrain(), flags=[
                "--model.decoupling.enabled", "false"]), "ft-no-id"),
        },
    }
    out = []
    for t in tables:
        order = [r.key for r in R.table_rows(t, s) if r.key not in s.skip]
        out += [(key, t, by_table[t][key]) for key in order]
    return out


def run_cells(cfg: ReproduceConfig, runs: Runs, page: Path, command: str, log) -> dict:
    todo = cells(runs, cfg.table_list)
    done_dir = runs.work / "cells"
    done_dir.mkdir(parents=True, exist_ok=True)
    results, ran = {}, 0
    for i, (key, table, fn) in enumerate(todo, 1):
        path = done_dir / f"{key}.json"
        head = f"cell {i}/{len(todo)} {key} (table {table})"
        if path.exists():
            results[key] = json.loads(path.read_text())
            log(f"{head}: done before ({R.fmt_rate(results[key]['result']['success'])})")
            continue
        if cfg.max_cells and ran >= cfg.max_cells:
            log(f"stopping after {ran} cells this run (--max_cells {cfg.max_cells}); re-run the same command to go on")
            break
        log(f"{head}: running")
        runs.commands, t0 = [], time.time()
        result = fn()
        cell = {"cell": key, "table": table, "scale": cfg.scale, "result": result, "commands": runs.commands,
                "seconds": round(time.time() - t0, 1), "commit": git_commit(page),
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cell, indent=1, default=float))
        tmp.replace(path)
        results[key] = cell
        ran += 1
        log(f"{head}: done in {cell['seconds']:.0f} s: {R.fmt_rate(result['success'])}")
        write_page(cfg, page, results, command, runs.work)
    write_page(cfg, page, results, command, runs.work)
    return results


# ---- the page -------------------------------------------------------------------------------------
def _comparison(ref: dict | None, row: dict | None) -> dict | None:
    from syvla.intervals import paired_comparison
    from syvla.sim.trusted import paired_outcomes

    if not ref or not row or ref is row:
        return None
    a, b = ref["result"], row["result"]
    if a["kind"] == "vqa":
        if a["ids"] != b["ids"]:
            return None
        return paired_comparison(a["hits"], b["hits"])
    return paired_comparison(*paired_outcomes(a["closed_loop"], b["closed_loop"]))


def _plot(path: Path, rows, results: dict, xlabel: str, xs, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    pts = [(x, results[r.key]["result"]["success"], r.paper) for x, r in zip(xs, rows) if r.key in results]
    if pts:
        x = [p[0] for p in pts]
        y = [p[1]["rate"] for p in pts]
        err = [[p[1]["rate"] - p[1]["low"] for p in pts], [p[1]["high"] - p[1]["rate"] for p in pts]]
        ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3, label="ours (95% Wilson interval)")
    paper = [(x, r.paper) for x, r in zip(xs, rows) if r.paper is not None]
    if paper:
        ax.plot([p[0] for p in paper], [p[1] for p in paper], "s--", color="gray", label="paper")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("success")
    ax.set_ylim(0, 1.05)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _commits(results: dict, keys) -> str:
    found = sorted({results[k]["commit"] for k in keys if k in results})
    return ", ".join(found) or "none yet"


def write_page(cfg: ReproduceConfig, page: Path, results: dict, command: str, work: Path) -> None:
    s = R.SCALES[cfg.scale]
    plots = page.parent / "results"
    lines = [PAGE_MARK, "", "# The paper's tables, reproduced in simulation", "",
             f"Command: `{command}`  ", f"Scale `{cfg.scale}`: {s.note}.  ",
             f"Task `{s.task}`; {s.demos} demos; pretraining {s.pretrain_steps} steps (35% sim VQA mixed in), "
             f"fine-tuning {s.finetune_steps} (30%); RL {s.rl_episodes} episodes x {s.rollouts} rollouts; "
             f"{s.eval_episodes} held-out layouts per evaluation (the same layouts and flow noise for every row); "
             f"Think-Before-Act at inference: {'on' if s.think else 'off'} for rows trained with CoT.  ",
             f"Page written {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')} at commit "
             f"{git_commit(page)}; each table names the commits its cells ran at.", "",
             "The paper's figures are its own (Tables 3-5: its real-robot Folding Shirt task; Table 6: its three "
             "real-robot tasks; the paper-size model); ours are Meta-World with the debug model, so only directions "
             "compare. Verdicts compare a row with its "
             "reference row pair by pair (exact McNemar test, p < 0.05): the paper's direction (lower / level / "
             "higher) agrees, disagrees, or is inconclusive at this scale.", ""]
    if cfg.scale == "tiny":
        lines += ["**Tiny scale: these numbers are not evidence; the run checks the machinery.**", ""]
    for table in [t for t in R.TABLES if t in cfg.table_list]:  # the paper's order, whatever order ran
        rows = R.table_rows(table, s)
        keys = [r.key for r in rows]
        title = {"3": "Table 3: full method vs ablations", "4": "Table 4: tau of Intention Decoupling",
                 "5": "Table 5: number of Feature Query Tokens N", "6": "Table 6: seeds",
                 "vqa": "Vision-language retention (Table 2's claim): sim VQA exact match"}[table]
        lines += [f"## {title}", "", f"Cells ran at commit(s) {_commits(results, keys)}.", ""]
        if table == "6":
            lines += _seed_table(rows, results, s)
        else:
            lines += _compare_table(table, rows, results, s.skip)
        if table == "3":
            lines += ["", "w/o RL continues imitation from the fine-tuned policy on as many new expert demos as RL "
                      "had rollouts. As in the paper, w/o CoT drops both Think-Before-Act and Intention Decoupling: "
                      "fine-tuned without the plan text and without masking, RL with --ablate_decoupling, acting "
                      "without thinking; unlike the paper it shares the pretraining (with plan text and masking), and "
                      "RL's expert frames keep their plan text in its prompts (RL has no switch for that yet)."]
        if table == "4":
            lines += ["", "Each tau is a fine-tuning run from the shared pretraining, evaluated without RL (the paper's "
                      "table comes from its full pipeline)."]
            _plot(plots / f"{cfg.scale}-tau.png", rows, results, "tau (%)", [100 * t for t in s.taus],
                  f"{command} (cells at commit {_commits(results, keys)})")
            lines += ["", f"![success vs tau](results/{cfg.scale}-tau.png)"]
        if table == "5":
            lines += ["", "Each N is its own pretraining and fine-tuning (N changes the architecture), without RL."]
            _plot(plots / f"{cfg.scale}-n.png", rows, results, "Feature Query Tokens N", list(s.query_tokens),
                  f"{command} (cells at commit {_commits(results, keys)})")
            lines += ["", f"![success vs N](results/{cfg.scale}-n.png)"]
        if table == "vqa":
            lines += _vqa_notes(results, work)
        lines += [""]
    page.parent.mkdir(parents=True, exist_ok=True)
    tmp = page.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(page)


def _compare_table(table: str, rows, results: dict, skip=frozenset()) -> list[str]:
    unit = "accuracy" if table == "vqa" else "success"
    out = [f"| row | paper | ours ({unit}, 95% CI) | vs reference | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        cell = results.get(r.key)
        ref_key = R.reference(table, rows, r.key)
        cmp_ = _comparison(results.get(ref_key), cell) if ref_key else None
        vs = (f"{100 * cmp_['difference']:+.0f} points vs {ref_key} ({cmp_['b_only']} better / {cmp_['a_only']} "
              f"worse)") if cmp_ else ("reference" if ref_key in (None, r.key) else "-")
        paper = "-" if r.paper is None else f"{r.paper:.2f}"
        ours = "not run at this scale" if r.key in skip else R.fmt_rate(cell["result"]["success"] if cell else None)
        out.append(f"| {r.label} | {paper} | {ours} | {vs} | {R.verdict(r.direction, cmp_) or '-'} |")
    return out


def _seed_table(rows, results: dict, s: R.Scale) -> list[str]:
    out = ["| seed (fine-tuning) | ours (success, 95% CI) |", "|---|---|"]
    rates = []
    for r in rows:
        cell = results.get(r.key)
        out.append(f"| {r.label} | {R.fmt_rate(cell['result']['success'] if cell else None)} |")
        if cell:
            rates.append(cell["result"]["success"]["rate"])
    spread = R.seed_spread(rates)
    if spread["n"] > 1:
        chance = R.binomial_std(spread["mean"], s.eval_episodes)
        verdict = "agrees" if 0.035 <= spread["std"] <= 0.070 else (
            "lower than the paper's" if spread["std"] < 0.035 else "higher than the paper's")
        out += ["", f"Std of success over {spread['n']} seeds: **{spread['std']:.3f}** (mean {spread['mean']:.3f}); "
                    f"paper: 0.035-0.070 ({verdict}). One evaluation of {s.eval_episodes} layouts alone varies by "
                    f"{chance:.3f} (binomial) at that mean, so part of our spread is the evaluation's, not training's. "
                    f"Seeds vary fine-tuning only (the shared pretraining is kept)."]
    return out


def _vqa_notes(results: dict, work: Path) -> list[str]:
    cell = next((c for c in results.values() if c["result"]["kind"] == "vqa"), None)
    if cell is None:
        return []
    out = []
    report = work / "sim_vqa" / "report.json"
    if report.exists():
        base = json.loads(report.read_text())["majority_baseline"]
        out += ["", f"Always giving the training split's most common answer per question kind scores "
                    f"{100 * base['accuracy']:.1f}% of the {base['n']} held-out questions (the floor a model must beat)."]
    out += ["", "Questions (syvla/sim/vqa.py) are answered exactly by the simulator state; held-out scenes use "
            "layout seeds disjoint from the training scenes. Per question kind (correct / asked):", "",
           "| row | " + " | ".join(sorted(cell["result"]["per_kind"])) + " |",
           "|---|" + "---|" * len(cell["result"]["per_kind"])]
    for key, c in results.items():
        if c["result"]["kind"] != "vqa":
            continue
        pk = c["result"]["per_kind"]
        out.append(f"| {key} | " + " | ".join(f"{pk[k]['correct']}/{pk[k]['n']}" for k in sorted(pk)) + " |")
    return out


def main(argv=None) -> int:
    cfg, ray_cfg = parse_configs(argv, __doc__, ReproduceConfig(), RayConfig())
    work = Path(cfg.work or f"runs/reproduce/{cfg.scale}").resolve()
    page = Path(cfg.page).resolve() if cfg.page else work / "results.md"
    try:
        check_page(page)
    except FileExistsError as e:
        raise SystemExit(f"reproduce.py: {e}")
    command = "python pipelines/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def log(line: str) -> None:
        print(f"[reproduce] {line}", flush=True)

    if cfg.page_only:
        done = {p.stem: json.loads(p.read_text()) for p in sorted((work / "cells").glob("*.json"))}
        write_page(cfg, page, done, command.replace(" --page_only true", ""), work)
        log(f"page {page} rewritten from {len(done)} finished cells; nothing ran")
        return 0
    work.mkdir(parents=True, exist_ok=True)
    connect_ray(ray_cfg.address, ray_cfg.num_cpus)
    runs = Runs(cfg, work, log)
    results = run_cells(cfg, runs, page, command, log)
    total = len(cells(runs, cfg.table_list))
    log(f"{len(results)}/{total} cells done; page {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
