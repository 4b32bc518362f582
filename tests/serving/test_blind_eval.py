"""pipelines/blind_eval.py end to end on Ray Serve: the command docs/operator.md shows, sized down.

With a simulated operator that is always wrong, every un-blinded label must be the opposite of what the
same checkpoint does in process on the same layout: the labels reached the right episodes, the schedule's
versions are the true ones, and the report's agreement check catches the lie.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:You should not use the .timeout. argument")]
ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operator.md"


def doc_commands(script: str) -> list[list[str]]:
    """The argv of every `python pipelines/<script>` line in docs/operator.md's bash blocks."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["python", f"pipelines/{script}"]:
                found.append(words[2:])
    assert found, f"docs/operator.md shows no `python pipelines/{script}` command"
    return found


def doc_command(script: str) -> list[str]:
    return doc_commands(script)[0]


def load_pipeline(name: str):
    spec = importlib.util.spec_from_file_location(f"pipeline_{name}", ROOT / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    sys.path.insert(0, str(ROOT / "pipelines"))
    spec.loader.exec_module(module)
    return module


def test_the_docs_pipeline_commands_parse():
    """Every pipeline command of docs/operator.md is accepted by its pipeline's flags (caught on the driver)."""
    serve_cfg, _ = load_pipeline("serve").parse_config(doc_command("serve.py"))
    assert serve_cfg.host == "0.0.0.0" and serve_cfg.checkpoint
    real, simulated = doc_commands("rl.py")
    _, run, _ = load_pipeline("rl").parse(real)
    assert (run.robots, run.host, run.name) == (0, "0.0.0.0", "lab-day-1")
    _, run, _ = load_pipeline("rl").parse(simulated)
    assert (run.operator, run.operator_error_rate, run.robots) == ("sim", 0.05, 2)
    assert "export SYVLA_API_KEY=" in DOC.read_text()  # the key the page and the robots share


def test_blind_eval_un_blinds_to_the_true_checkpoints(ray_local, debug_ckpts, tmp_path):
    from serving_testlib import free_port

    argv = doc_command("blind_eval.py")
    i = argv.index("--checkpoints")
    argv[i + 1: i + 3] = [str(debug_ckpts[0]), str(debug_ckpts[1])]  # the docs' two checkpoints
    out = tmp_path / "blind"
    argv += ["--episodes", "4", "--robots", "2", "--max_steps", "20", "--error_rate", "1.0", "--undo_window_s", "0.5",
             "--output", str(out), "--port", str(free_port())]
    assert load_pipeline("blind_eval").main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert [a["labelled"] for a in report["arms"]] == [2, 2]  # balanced: one block of 2 per 2 episodes
    assert sorted(s["slot"] for s in report["schedule"]) == [0, 0, 1, 1]
    assert report["operator_errors"] == 4
    for arm in report["arms"]:
        local = report["in_process"][str(arm["version"])]
        assert arm["checkpoint"] == str(debug_ckpts[arm["version"]])
        # Every label was flipped, so the blind outcome is the opposite of the in-process one, layout by layout.
        assert arm["success"]["successes"] == local["success"]["n"] - local["success"]["successes"]
        assert local["same_outcome"] == 2
    assert "| 0 |" in (out / "report.md").read_text()
    with pytest.raises(SystemExit, match="not empty"):  # never writes into a folder it did not create
        load_pipeline("blind_eval").main(argv)
