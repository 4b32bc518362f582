"""Training-step time with and without Intention Decoupling (§3.2), in one run.

The configuration keeps the paper's proportions and scales widths down so it
runs on a CPU: the VLM : action-expert parameter ratio matches Qwen2.5-VL-3B
(3.75B with its ViT) : 0.69B, and the token counts match the paper preset
(VLM: one 224 px camera = 64 image tokens + prompt + 20 query tokens; expert:
3 views x 64 pooled SigLIP tokens + state + time + 50 action tokens).
Steps alternate between the two settings so drift in machine load hits both.

Prints `intention_decoupling_step_ratio: X` last (paper ~1.10; goal <= 1.05).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

import syvla  # noqa: F401
from syvla import constants as K
from syvla.model.config import ActionExpertConfig, SyVLAConfig, VisionTowerConfig, VLMConfig
from syvla.model.processing import build_batch
from syvla.model.syvla import SyVLA
from syvla.normalize import DatasetStats, FeatureStats, NormStats

PAPER_RATIO = 3.75 / 0.69  # Qwen2.5-VL-3B (LLM + ViT) : action expert with its tower


def bench_config() -> SyVLAConfig:
    vlm = VLMConfig(hidden_size=256, num_layers=8, num_heads=8, num_kv_heads=2, intermediate_size=1024,
                    vision_depth=4, vision_hidden_size=128, vision_heads=4, image_size=224)
    expert = ActionExpertConfig(width=144, depth=4, num_heads=8, ff_ratio=2.67, chunk_len=50, image_tokens_per_view=64,
                                vision=VisionTowerConfig(image_size=128, patch_size=8, hidden_size=96, num_layers=3,
                                                         num_heads=4, intermediate_size=384))
    return SyVLAConfig(vlm=vlm, expert=expert, num_query_tokens=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setting")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = bench_config()
    model = SyVLA(cfg)
    n_vlm = sum(p.numel() for p in model.vlm.parameters())
    n_expert = sum(p.numel() for p in model.expert.parameters())
    print(f"VLM params {n_vlm / 1e6:.2f}M, expert params {n_expert / 1e6:.2f}M, "
          f"ratio {n_vlm / n_expert:.2f} (paper {PAPER_RATIO:.2f})")

    rng = np.random.default_rng(0)
    stats = NormStats({"metaworld": DatasetStats(FeatureStats.from_array(rng.normal(size=(64, 39))),
                                                 FeatureStats.from_array(rng.normal(size=(64, 4))))})
    samples = [{"embodiment": "metaworld", K.KIND: K.KIND_ROBOT, K.TASK: "pick up the red block and place it in the bin",
                K.COT: None, "images": {c: rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
                                        for c in ("corner2", "topview", "gripperPOV")},
                K.STATE: rng.normal(size=39).astype(np.float32), K.ACTIONS: rng.normal(size=(50, 4)).astype(np.float32),
                K.ACTION_MASK: np.ones(50, bool)} for _ in range(args.batch)]
    batch = build_batch(samples, model.processor, cfg, stats)
    print(f"VLM tokens/sample {batch.vlm['input_ids'].shape[1]}, expert tokens/sample "
          f"{3 * cfg.expert.image_tokens_per_view + 2 + cfg.expert.chunk_len}")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)

    def step(decoupling: bool) -> float:
        t0 = time.perf_counter()
        out = model(batch, gen, decoupling=decoupling)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for flag in (False, True, False, True):  # warm-up
        step(flag)
    times = {False: [], True: []}
    for i in range(args.steps):
        for flag in ((False, True) if i % 2 == 0 else (True, False)):
            times[flag].append(step(flag))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"step without decoupling {off * 1e3:.0f} ms, with {on * 1e3:.0f} ms (median of {args.steps})")
    print(f"intention_decoupling_step_ratio: {on / off:.3f}")


if __name__ == "__main__":
    main()
