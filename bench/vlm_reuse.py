"""Asynchronous VLM and action expert (§3.1): per-call latency when an episode reuses its Feature Query States.

    python bench/vlm_reuse.py                          # debug preset, untrained weights, CPU
    python bench/vlm_reuse.py --checkpoint CKPT --every 4

`Policy.infer_batch(..., states=)` on one robot's observations: every call runs the VLM (the baseline),
against the VLM on every k-th call and only the action expert between (what ServeConfig.vlm_every does
per episode). Same observations, same noise, in one run. Last line: `vlm_reuse_speedup: X` (baseline
ms per call / reuse ms per call).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import syvla  # noqa: E402,F401  (installs the torchvision shim first)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="", help="policy checkpoint ('' = an untrained debug one)")
    p.add_argument("--every", type=int, default=4, help="k: the VLM runs on every k-th call")
    p.add_argument("--calls", type=int, default=80, help="act calls per variant")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    if args.every < 2 or args.calls < args.every:
        p.error("--every must be >= 2 and --calls >= --every")

    import numpy as np
    import torch

    from syvla.model.policy import Policy, make_debug_checkpoint
    from syvla.sim import metaworld as mw

    torch.set_num_threads(args.threads)
    ckpt = args.checkpoint or make_debug_checkpoint(Path(tempfile.mkdtemp()) / "debug", embodiments=(mw.EMBODIMENT,))
    policy = Policy.load(ckpt)
    rng = np.random.default_rng(0)
    obs = [{"embodiment": mw.DATASET_NAME, "instruction": mw.instruction("push-v3"), "seed": i,
            "state": rng.normal(size=mw.STATE_DIM).astype(np.float32),
            "images": {c: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for c in mw.CAMERAS}}
           for i in range(args.calls)]

    def run(every: int) -> float:
        states = None
        t0 = time.perf_counter()
        for i, o in enumerate(obs):
            out = policy.infer_batch([o], states=[None if i % every == 0 else states])[0]
            states = out["states"]
        return (time.perf_counter() - t0) / len(obs) * 1e3

    run(1)  # warm-up
    base, reuse = run(1), run(args.every)
    print(f"[vlm_reuse] VLM every call: {base:.1f} ms per call; every {args.every}th call: {reuse:.1f} ms per call")
    print(f"vlm_reuse_speedup: {base / reuse:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
