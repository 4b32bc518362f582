"""The paper preset's size and memory, and (on a GPU) its speed: one script for a borrowed GPU machine.

    python bench/gpu_check.py            # no GPU here: meta-device build, parameter counts, memory estimate
    python bench/gpu_check.py --json runs/gpu_check.json

The paper preset (App. A): Qwen2.5-VL-3B-Instruct as the VLM (its published architecture, written out
below, so nothing is downloaded), 20 Feature Query Tokens, the adapter, and the 15-layer, 1408-wide action
expert with its SigLIP-L/16 tower at 256 px. Built on the meta device (shapes only, no memory), it
reports parameters per part and the memory they need: bf16 weights for inference, and bf16 weights +
bf16 gradients + fp32 master weights and AdamW moments for training, with ZeRO-2 sharding the last
three over `--gpus` data-parallel ranks (activations not included). With a GPU present it says so and
that its timed measurements (ZeRO-2 train step, act latency with and without CoT, Intention
Decoupling's ratio, a CUDA Serve replica) are not written yet: nothing here claims a GPU figure it did
not measure. Last line: `paper_preset_params_b: X` (billions).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import syvla  # noqa: E402,F401  (installs the torchvision shim first)

# Qwen2.5-VL-3B-Instruct's config.json (the published architecture), the fields that set its size.
QWEN25_VL_3B = {
    "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
    "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                      "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "in_chans": 3,
                      "hidden_act": "silu"},
}
GIB = 2**30


def qwen_config():
    from transformers import Qwen2_5_VLConfig

    text = {k: v for k, v in QWEN25_VL_3B.items() if k != "vision_config"}
    return Qwen2_5_VLConfig(text_config=text, vision_config=QWEN25_VL_3B["vision_config"],
                            tie_word_embeddings=True)


def meta_model():
    """The paper preset's SyVLA on the meta device (no weights, no download)."""
    import dataclasses

    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from syvla.model.config import paper_config
    from syvla.model.syvla import SyVLA
    from syvla.model.vlm import build_debug_processor
    from syvla.sim import metaworld as mw

    cfg = paper_config(embodiments=(mw.EMBODIMENT,))
    vision = dataclasses.replace(cfg.expert.vision, pretrained="")  # the same tower, not loaded
    cfg = dataclasses.replace(cfg, expert=dataclasses.replace(cfg.expert, vision=vision))
    with torch.device("meta"):
        vlm = Qwen2_5_VLForConditionalGeneration(qwen_config())
        model = SyVLA(cfg, vlm=vlm, processor=build_debug_processor(cfg.vlm))
    return cfg, model


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def sizes(model) -> dict:
    vlm = model.vlm
    visual = getattr(vlm, "visual", None) or getattr(vlm.model, "visual")
    expert_vision = count(model.expert.vision) if hasattr(model.expert, "vision") else 0
    out = {"vlm": count(vlm), "vlm_vision": count(visual), "query_tokens": count(model.query_tokens),
           "adapter": count(model.adapter), "expert": count(model.expert), "expert_vision": expert_vision}
    out["vlm_language"] = out["vlm"] - out["vlm_vision"]
    out["total"] = count(model)
    return out


def memory(params: int, gpus: int) -> dict:
    """Bytes per GPU: inference (bf16 weights) and ZeRO-2 training (activations not included)."""
    weights = 2 * params
    sharded = (2 + 4 + 8) * params / gpus  # bf16 grads, fp32 master weights, fp32 AdamW m and v
    return {"inference_gib": weights / GIB, "train_zero2_gib_per_gpu": (weights + sharded) / GIB, "gpus": gpus}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=8, help="data-parallel ranks ZeRO-2 shards over (App. A fine-tunes on 8)")
    p.add_argument("--json", default="", help="write the figures here")
    args = p.parse_args(argv)
    if args.gpus < 1:
        p.error("--gpus must be >= 1")

    import torch

    cfg, model = meta_model()
    n = sizes(model)
    mem = memory(n["total"], args.gpus)
    gpu = torch.cuda.is_available()
    report = {"params": n, "memory": mem, "gpu": torch.cuda.get_device_name(0) if gpu else None,
              "measured_on_gpu": False, "expert": {"width": cfg.expert.width, "depth": cfg.expert.depth}}
    b = 1e9
    print(f"[gpu_check] paper preset (meta device): total {n['total'] / b:.3f} B parameters = VLM {n['vlm'] / b:.3f} B "
          f"(language {n['vlm_language'] / b:.3f} B, vision {n['vlm_vision'] / b:.3f} B) + action expert "
          f"{n['expert'] / b:.3f} B (its SigLIP tower {n['expert_vision'] / b:.3f} B; {cfg.expert.depth} x "
          f"{cfg.expert.width}) + adapter {n['adapter'] / 1e6:.1f} M + query tokens {n['query_tokens'] / 1e3:.0f} K")
    print(f"[gpu_check] memory: inference (bf16 weights) {mem['inference_gib']:.1f} GiB; ZeRO-2 training on "
          f"{args.gpus} GPUs {mem['train_zero2_gib_per_gpu']:.1f} GiB per GPU before activations")
    if gpu:
        print(f"[gpu_check] a GPU is present ({report['gpu']}), but the timed GPU measurements are not written "
              f"yet: no GPU figure was measured")
    else:
        print("[gpu_check] no GPU on this machine: nothing was measured on a GPU")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"paper_preset_params_b: {n['total'] / b:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
