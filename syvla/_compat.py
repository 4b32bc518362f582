"""Make torchvision importable when its C++ extension cannot load.

The registry's torchvision wheel is built against CUDA torch; under the CPU
torch its extension fails to load and `import torchvision` raises
"operator torchvision::nms does not exist" while registering fake kernels.
Defining the op schemas before torchvision's first import lets transforms,
models, timm, open_clip and the Qwen2.5-VL processor import and run; only the
C++ ops (nms, roi_align, ...) and torchvision.io stay unavailable. On a
working install (GPU or a matching CPU build) nothing is defined.

The fix runs lazily, from an import hook, the moment something first imports
torchvision: importing syvla itself loads neither torch nor torchvision, so the
robot client stays light. Importing this module installs the hook; syvla/__init__.py
and each module that may reach torchvision import it.
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # keeps the torch.library.Library alive for the process


def _extension_loads(locations) -> bool:
    import torch

    for loc in locations:
        for path in glob.glob(os.path.join(loc, "_C*.so")):
            try:
                torch.ops.load_library(path)
                return True
            except OSError:
                return False
    return False


def define_missing_ops() -> bool:
    """Define torchvision's op schemas if its extension cannot load; True if it did."""
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or _extension_loads(spec.submodule_search_locations or ()):
        return False
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        lib.define(schema)
    _library = lib
    return True


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionHook)]
            define_missing_ops()
        return None  # the regular finders import it


def install() -> None:
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionHook())


# Importing this module installs the hook: every module of ours that may import torchvision (through
# transformers, timm or open_clip) imports it first, so the fix does not depend on syvla/__init__.py
# having run (a replica that found `syvla` as a namespace package, e.g. from the checkout's parent).
install()
