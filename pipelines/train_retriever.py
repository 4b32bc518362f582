"""Train the RL retriever's CLIP image encoder on your own imitation set; measure retrieval on held-out episodes.

    python pipelines/collect_sim.py --tasks reach-v3,push-v3 --output data/metaworld           # the imitation set
    python pipelines/train_retriever.py --data data/metaworld --tasks reach-v3,push-v3 \
        --output checkpoints/retriever/clip.pt                                                  # ~1-2 min on a CPU
    python pipelines/rl.py --clip_model debug --clip_checkpoint checkpoints/retriever/clip.pt  # RL retrieves with it
    python pipelines/train_retriever.py --clip_model ViT-B-32 --clip_checkpoint /ckpt/vit_b_32.bin --lr 1e-5 \\
        --device cuda --output checkpoints/retriever/vit_b_32.pt                                # fine-tune a real CLIP

A contrastive fine-tune (image <-> instruction and same-phase InfoNCE, every camera view) of the open_clip model
RL's clip_encoder builds for --clip_model, from --clip_checkpoint or its random init (syvla.rl.retriever_training).
It holds --heldout_fraction of each task's episodes out, and at the end prints same-task precision@k and phase
error of top-k retrieval for those episodes' frames: trained vs untrained encoder vs random picks.
Writes --output (an open_clip state dict that --clip_checkpoint loads) and <stem>.json (config and measurements);
it never writes over a file it did not write unless --overwrite true. Every RetrieverTrainConfig field is a flag.
One process, no Ray (--device cuda for a GPU). On a small, busy CPU set OMP_NUM_THREADS=1: spinning OpenMP
threads made the debug run 25x slower on a shared 2-core machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the syvla package when run from anywhere

import syvla  # noqa: E402,F401  (installs the torchvision shim first, as in every syvla process)
from syvla.cli import parse_configs  # noqa: E402
from syvla.rl.retriever_training import (RetrieverTrainConfig, check_config, format_quality,  # noqa: E402
                                         train_retriever)


def parse_config(argv=None) -> RetrieverTrainConfig:
    return parse_configs(argv, __doc__, RetrieverTrainConfig())


def main(argv=None) -> int:
    cfg = parse_config(argv)
    try:
        check_config(cfg)  # every error that needs no training, before loading a frame
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise SystemExit(f"train_retriever.py: {e}")
    result = train_retriever(cfg, log=lambda line: print(line, flush=True))
    k = cfg.eval_k
    print(format_quality(result.quality, f"[train_retriever] top-{k} retrieval of held-out frames from the training "
                                         f"episodes (weighted multi-view cosine, w = {cfg.view_weights}):"))
    print(f"[train_retriever] RL: --clip_model {cfg.clip_model} --clip_checkpoint {result.checkpoint}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
