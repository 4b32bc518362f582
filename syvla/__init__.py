"""syvla: train, serve and improve SyVLA vision-language-action policies.

Importing the package first makes torchvision importable on CPU-only torch
installs (see syvla/_compat.py); every process that uses syvla (tests, Ray
workers, Serve replicas) imports this before torchvision, transformers'
Qwen2.5-VL processor, timm or open_clip.
"""

from syvla import _compat

_compat.install()

__version__ = "0.1.0"
