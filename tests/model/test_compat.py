import subprocess
import sys


def test_import_syvla_is_light_and_makes_torchvision_importable():
    code = (
        "import sys, syvla\n"
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'syvla import is heavy'\n"
        "import torchvision, timm, open_clip\n"
        "from transformers import Qwen2_5_VLProcessor\n"
        "import torchvision.transforms.functional as F, torch\n"
        "print(F.resize(torch.zeros(3, 8, 8), [4, 4]).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "torch.Size([3, 4, 4])" in out.stdout


def test_torchvision_works_when_syvla_is_imported_without_its_init():
    """A replica that found `syvla` as a bare namespace (no __init__ run, e.g. started from the checkout's
    parent) still gets the fix from the modules that reach torchvision, whichever comes first."""
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[2] / "syvla"
    for first in ("syvla.model.vlm", "syvla.rl.retrieval", "syvla.rl.value"):
        code = (
            "import sys, types\n"
            f"pkg = types.ModuleType('syvla'); pkg.__path__ = [{str(pkg)!r}]; sys.modules['syvla'] = pkg\n"
            f"import {first}\n"
            "assert not hasattr(sys.modules['syvla'], '__version__'), 'the package __init__ ran'\n"
            "import torchvision, open_clip\n"
            "from transformers import Qwen2_5_VLProcessor\n"
            "print('ok')\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and "ok" in out.stdout, (first, out.stderr[-2000:])
