"""Every bench script starts and documents its flags (the full runs are long; docs say what each measured)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "steps.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_help(script):
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout and "--" in out.stdout
