"""Write a VQA data set from the simulator (LLaVA JSON): questions the Meta-World state answers exactly.

    python pipelines/make_sim_vqa.py --output data/sim_vqa          # 6 tasks x (8 + 4 held-out) episodes, ~1 min
    python pipelines/prepare_data.py --inputs metaworld=data/metaworld sim_vqa=data/sim_vqa/train.json \\
        --output data/prepared_mm                                  # the multimodal share of training
    python pipelines/evaluate.py --checkpoint CKPT --episodes 0 --heldout_episodes 0 --vqa data/sim_vqa/heldout.json

Questions, answers and thresholds: syvla/sim/vqa.py. Every field of syvla.sim.vqa.SimVQAConfig is a flag.
A folder this generator wrote with the same arguments is reused; any other non-empty folder is refused.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the syvla package when run from anywhere

import syvla  # noqa: E402,F401  (installs the torchvision shim first)
from syvla.cli import parse_configs  # noqa: E402
from syvla.sim.vqa import SimVQAConfig, check_output, make_vqa  # noqa: E402


def main(argv=None) -> int:
    cfg = parse_configs(argv, __doc__, SimVQAConfig())
    try:
        check_output(cfg.output)
    except FileExistsError as e:
        raise SystemExit(f"make_sim_vqa.py: --output {e}")
    report_path = Path(cfg.output) / "report.json"
    if report_path.is_file():
        made = json.loads(report_path.read_text())
        if made.get("config") == json.loads(json.dumps(dataclasses.asdict(cfg))):
            print(f"[make_sim_vqa] {cfg.output} already holds this data set (same arguments); nothing to do.")
            return 0
    report = make_vqa(cfg, log=lambda line: print(f"[make_sim_vqa] {line}", flush=True))
    base = report["majority_baseline"]
    print(f"[make_sim_vqa] {report['train_samples']} training and {report['heldout_samples']} held-out samples in "
          f"{cfg.output}; majority-answer baseline on held-out: "
          + (f"{base['accuracy']:.3f}" if base["accuracy"] is not None else "n/a"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
