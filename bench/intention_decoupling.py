"""Training-step time with and without Intention Decoupling (§3.2), in one run.

The configuration keeps the paper's proportions and scales widths down so it
runs on a CPU: the VLM : action-expert parameter ratio matches Qwen2.5-VL-3B
(3.75B with its ViT) : 0.69B, and the token counts match the paper preset
(VLM: one 224 px camera = 64 image tokens + prompt + 20 query tokens; expert:
3 views x 64 pooled SigLIP tokens + state + time + 50 action tokens).
Three settings are timed in rotation: no decoupling, decoupling with an exact
fp32 probe (pass 1), and with the default bf16-autocast probe; the bench also
reports how often the bf16 probe masks the same states as the fp32 one.

Prints `intention_decoupling_step_ratio: X` last, for the configured default
probe (DecouplingConfig.probe_dtype; paper ~1.10; goal <= 1.05). Use
--threads 1 when another process holds a core: oversubscribed torch threads
distort every setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

import syvla  # noqa: F401
from syvla.model.config import ActionExpertConfig, SyVLAConfig, VisionTowerConfig, VLMConfig
from syvla.model.processing import build_batch
from syvla.model.sample import Sample
from syvla.model.syvla import SyVLA
from syvla.normalize import DatasetStats, FeatureStats, NormStats
from syvla.sim import metaworld as mw

PAPER_RATIO = 3.75 / 0.69  # Qwen2.5-VL-3B (LLM + ViT) : action expert with its tower


def bench_config() -> SyVLAConfig:
    vlm = VLMConfig(hidden_size=256, num_layers=8, num_heads=8, num_kv_heads=2, intermediate_size=1024,
                    vision_depth=4, vision_hidden_size=128, vision_heads=4, image_size=224)
    expert = ActionExpertConfig(width=144, depth=4, num_heads=8, ff_ratio=2.67, chunk_len=50, image_tokens_per_view=64,
                                vision=VisionTowerConfig(image_size=128, patch_size=8, hidden_size=96, num_layers=3,
                                                         num_heads=4, intermediate_size=384))
    return SyVLAConfig(embodiments=(mw.EMBODIMENT,), vlm=vlm, expert=expert, num_query_tokens=20)


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
    samples = [Sample(embodiment="metaworld", task="pick up the red block and place it in the bin",
                      images={c: rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
                              for c in ("corner2", "topview", "gripperPOV")},
                      state=rng.normal(size=39).astype(np.float32), actions=rng.normal(size=(50, 4)).astype(np.float32),
                      action_mask=np.ones(50, bool)) for _ in range(args.batch)]
    batch = build_batch(samples, model.processor, cfg, stats)
    print(f"VLM tokens/sample {batch.vlm['input_ids'].shape[1]}, expert tokens/sample "
          f"{3 * cfg.expert.image_tokens_per_view + 2 + cfg.expert.chunk_len}")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    settings = {"off": (False, "float32"), "fp32 probe": (True, "float32"), "bf16 probe": (True, "bfloat16")}

    def step(name: str) -> float:
        enabled, probe = settings[name]
        model.cfg = dataclasses.replace(cfg, decoupling=dataclasses.replace(cfg.decoupling, enabled=enabled,
                                                                            probe_dtype=probe))
        t0 = time.perf_counter()
        out = model(batch, gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        return time.perf_counter() - t0

    # Pass 1's own time inside the real steps: the call that finds the mask, timed where the model makes it.
    import syvla.model.syvla as syvla_model

    probe_times: list[float] = []
    exact_probe = syvla_model.decoupled_states

    def timed_probe(*a, **kw):
        t0 = time.perf_counter()
        out = exact_probe(*a, **kw)
        probe_times.append(time.perf_counter() - t0)
        return out

    syvla_model.decoupled_states = timed_probe
    for name in list(settings) * 2:  # warm-up
        step(name)
    times = {name: [] for name in settings}
    order = list(settings)
    pass1 = {name: [] for name in settings if settings[name][0]}
    for i in range(args.steps):  # rotate the order so drift in machine load hits every setting alike
        for name in order[i % 3:] + order[: i % 3]:
            probe_times.clear()
            times[name].append(step(name))
            if name in pass1:
                pass1[name].append(sum(probe_times))
    syvla_model.decoupled_states = exact_probe
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in pass1.items():
        # The exact probe needs one expert forward and one input-gradient backward: no second VLM pass, no
        # parameter gradients. That pass is the floor of any exact probe with this expert, since every expert
        # token (the image tokens too) attends to the states.
        print(f"{name}: pass 1 {statistics.median(t) * 1e3:.0f} ms of a {med[name] * 1e3:.0f} ms step; floor "
              f"1 + pass 1 / off = {1 + statistics.median(t) / med['off']:.3f}")
    print("median step: " + ", ".join(f"{name} {ms * 1e3:.0f} ms" for name, ms in med.items()) + f" ({args.steps} steps each)")
    print(f"ratio with the bf16-autocast probe: {med['bf16 probe'] / med['off']:.3f}; its masked states "
          f"match the fp32 probe's {mask_agreement(model, cfg, batch):.1%}")
    default = "bf16 probe" if cfg.decoupling.probe_dtype == "bfloat16" else "fp32 probe"
    print(f"intention_decoupling_step_ratio: {med[default] / med['off']:.3f}")


def mask_agreement(model, cfg, batch, trials: int = 8) -> float:
    """Share of masked Feature Query States that the bf16 probe picks exactly as the fp32 probe does."""
    from syvla.model import flow

    with torch.no_grad():
        hidden = model.vlm_hidden(batch.vlm, batch.query_mask)
    probes = {dt: dataclasses.replace(cfg, decoupling=dataclasses.replace(cfg.decoupling, enabled=True, probe_dtype=dt))
              for dt in ("float32", "bfloat16")}
    same = total = 0
    for k in range(trials):
        g = torch.Generator().manual_seed(1000 + k)
        t = flow.sample_time(batch.num_robot, cfg.flow, g)
        noise = torch.randn(batch.actions.shape, generator=g)
        keeps = []
        for probe_cfg in probes.values():  # the same flow times and noises under either probe
            model.cfg = probe_cfg
            with torch.no_grad():
                keeps.append(model.per_sample_flow_losses(batch, t[:, None], noise[:, None], hidden=hidden)[1])
        model.cfg = cfg
        masked = [~k_ for k_ in keeps]
        same += int((masked[0] & masked[1]).sum())
        total += int(masked[0].sum())
    return same / max(total, 1)


if __name__ == "__main__":
    main()
