"""The robot client is light: importing it loads neither torch nor ray (nor the server's stack)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "ray", "fastapi", "starlette", "PIL", "transformers", "syvla.model", "syvla.serving.app")


def test_import_client_loads_no_torch_no_ray():
    code = ("import json, sys; import syvla.client; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
