"""pipelines/reproduce.py: verdicts on planted results, the page's refusal to overwrite a foreign file, and
the tiny matrix end to end (every table's cells, a budgeted first run resumed by a second, the page)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from syvla import reproduce as R
from syvla.intervals import paired_comparison

ROOT = Path(__file__).resolve().parents[1]


def test_verdicts_follow_the_papers_direction_and_the_paired_test():
    ref = [True] * 40 + [False] * 10
    much_worse = [True] * 20 + [False] * 30  # 20 layouts lost, none gained: p < 1e-5
    slightly_worse = [True] * 38 + [False] * 12
    better = [True] * 50
    assert R.verdict("lower", paired_comparison(ref, much_worse)).startswith("agrees")
    assert R.verdict("lower", paired_comparison(ref, slightly_worse)).startswith("inconclusive")
    assert R.verdict("lower", paired_comparison(ref, better)).startswith("disagrees (higher")
    assert R.verdict("level", paired_comparison(ref, slightly_worse)).startswith("agrees")
    assert R.verdict("level", paired_comparison(ref, much_worse)).startswith("disagrees")
    assert R.verdict("", paired_comparison(ref, ref)) == ""


def test_rows_carry_the_papers_numbers():
    s = R.SCALES["cpu"]
    t3 = {r.key: r for r in R.table_rows("3", s)}
    assert t3["t3-full"].paper == 0.86 and t3["t3-std-adv"].paper == 0.0 and t3["t3-no-id"].paper == 0.43
    t4 = R.table_rows("4", s)
    assert [r.paper for r in t4] == [0.43, 0.73, 0.86, 0.77, 0.86, 0.82, 0.64]
    assert [r.direction for r in t4] == ["lower", "level", "", "level", "level", "level", "lower"]
    assert [r.paper for r in R.table_rows("5", s)] == [0.39, 0.65, 0.78, 0.86, 0.83, 0.87]
    assert len(R.table_rows("6", s)) == 5
    spread = R.seed_spread([0.6, 0.7, 0.8])
    assert spread["mean"] == pytest.approx(0.7) and spread["std"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown table"):
        R.table_rows("7", s)


def test_config_errors_before_anything_runs(tmp_path):
    page = tmp_path / "results.md"
    page.write_text("my own notes\n")
    for argv, message in ((["--scale", "huge"], "scale"), (["--tables", "3,9"], "tables"),
                          (["--scale", "tiny", "--page", str(page)], "was not written by reproduce.py")):
        out = subprocess.run([sys.executable, "pipelines/reproduce.py", "--work", str(tmp_path / "w"), *argv],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode != 0 and message in out.stderr, out.stderr[-2000:]
    assert page.read_text() == "my own notes\n" and not (tmp_path / "w").exists()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 20 cells, 6 of them RL runs with Serve: ~8 min on 2 idle cores
def test_tiny_matrix_runs_every_table_resumes_and_writes_the_page(tmp_path):
    work = tmp_path / "w"
    argv = [sys.executable, "pipelines/reproduce.py", "--scale", "tiny", "--tables", "3,4,5,6,vqa", "--work", str(work)]
    first = subprocess.run([*argv, "--max_cells", "2"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "stopping after 2 cells" in first.stdout
    done = sorted((work / "cells").glob("*.json"))
    assert [p.stem for p in done] == ["t3-full", "t3-no-cot"]
    stamps = {p: p.stat().st_mtime_ns for p in done}
    page = (work / "results.md").read_text()
    assert "| not run |" in page  # the budgeted run's page shows what is missing

    second = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("done before") == 2 and "t3-full (table 3): done before" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # finished cells are never redone
    tiny = R.SCALES["tiny"]
    keys = [r.key for t in R.TABLES for r in R.table_rows(t, tiny) if r.key not in tiny.skip]
    cells = {k: json.loads((work / "cells" / f"{k}.json").read_text()) for k in dict.fromkeys(keys)}
    shared = {R.tau_cell(0.05), R.n_cell(20), R.seed_cell(0)}  # the shared base's own evaluation
    for key in shared:
        assert cells[key]["result"]["success"] == cells["t3-imitation"]["result"]["success"]
    seeds = None
    for key, cell in cells.items():
        assert cell["commands"] or key in shared, key  # each cell records the pipelines it ran
        r = cell["result"]
        if r["kind"] == "success":
            assert r["success"]["n"] == R.SCALES["tiny"].eval_episodes
            ran = sorted((e["seed"], e["noise_seed"]) for e in r["closed_loop"]["results"])
            assert seeds is None or ran == seeds, key  # every row on the same layouts and noise: paired
            seeds = ran
        else:
            assert r["success"]["n"] == len(r["hits"]) > 0
    assert cells["t3-no-cot"]["result"]["think"] is False and cells["t3-full"]["result"]["think"] is True
    page = (work / "results.md").read_text()
    for heading in ("Table 3", "Table 4", "Table 5", "Table 6", "Vision-language retention"):
        assert f"## {heading}" in page
    assert "| not run |" not in page and page.count("not run at this scale") == len(tiny.skip)
    assert "not evidence" in page
    assert "python pipelines/reproduce.py --scale tiny" in page
    assert (work / "results" / "tiny-tau.png").stat().st_size > 1000
    assert (work / "results" / "tiny-n.png").stat().st_size > 1000


def test_page_only_rewrites_the_page_from_finished_cells(tmp_path):
    """The cpu run's committed cells (docs/results/reproduce-cpu) make the page again, without Ray or training."""
    import shutil

    cells = tmp_path / "w" / "cells"
    cells.mkdir(parents=True)
    for p in (ROOT / "docs" / "results" / "reproduce-cpu").glob("t4-*.json"):
        shutil.copy(p, cells / p.name)
    page = tmp_path / "page.md"
    out = subprocess.run([sys.executable, "pipelines/reproduce.py", "--scale", "cpu", "--tables", "4", "--work",
                          str(tmp_path / "w"), "--page", str(page), "--page_only", "true"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = page.read_text()
    assert "## Table 4" in text and "36/50 = 72%" in text and "| not run |" not in text
    assert (tmp_path / "results" / "cpu-tau.png").exists()
