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
