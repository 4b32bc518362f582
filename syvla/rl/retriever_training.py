"""Train the RL retriever's CLIP image encoder E on the user's own imitation set (§3.3 Similar-Sample Guidance).

No pretrained CLIP can be downloaded here, and a random one maps every Meta-World frame to nearly the same
point (mean weighted similarity 0.996 for retrieved frames, 0.995 for random ones): its ranking carries only
low-level pixel statistics. This module fine-tunes the open_clip model that `clip_encoder(clip_model, ...)` builds
("debug" or e.g. "ViT-B-32"; from `clip_checkpoint` or the random init of `seed`) on the frames RL retrieves
from, and measures retrieval on episodes it did not train on.

    cfg = RetrieverTrainConfig(data="data/metaworld", tasks="reach-v3,push-v3", output="checkpoints/retriever/clip.pt")
    result = train_retriever(cfg)          # checkpoint + <stem>.json report; result.quality is the measured table
    encoder = clip_encoder(cfg.clip_model, cfg.output)   # what RL's --clip_checkpoint loads

Loss: two symmetric InfoNCE terms, each computed per camera view and averaged over views (the views share E):
    text   image <-> instruction (open_clip's text tower and tokenizer): image -> text is a softmax over the
           training tasks' instructions; text -> image treats every frame of that task in the batch as a
           positive (multi-positive InfoNCE: a batch holds many frames of one task). Frames of a task cluster.
    phase  NT-Xent over the 2B frames of a batch of B (anchor, positive) pairs: the positive is a frame of
           the anchor's episode at most `window` frames away; the other frames of the batch are negatives,
           except those of the same episode within `window` of the frame (near-duplicates are not pushed
           apart). So retrieval finds the same phase of an episode. Alone, this is instance discrimination
           (it also learns what tells episodes apart): on held-out episodes it left the phase error above
           the random init's in 1 of 3 seeds and above the variant's in all 3. So by default (`cross_episode_tol` 0.05) frames of OTHER
           episodes of the same task within 0.05 of normalized time t/(T-1) are positives too (multi-positive
           InfoNCE, as SupCon); cross_episode_tol=0 is the same-episode-only loss.
Temperature: learnable, CLIP's own `logit_scale` (init 1/0.07, scale clamped to <= 100 as in CLIP), shared
by both terms and saved in the checkpoint.

Measurement (`measure_retrieval`): each frame of the held-out episodes queries an index of the training
episodes through `SampleRetriever` (the RL code path: ExpertIndex, `retrieve`, the weighted multi-view
cosine with `view_weights`), reporting same-task precision@k and the phase error |t_q/(T_q-1) - t_r/(T_r-1)|
of the top-k, for the trained encoder, the untrained one (the starting point) and uniformly random picks.

Outputs: `output` is a plain open_clip state dict (`torch.save(model.state_dict())`, text tower included),
loaded by `ClipImageEncoder.from_pretrained(clip_model, output)`; `<stem>.json` next to it holds the
config, the split, the losses, the measured quality and the checkpoint's sha256, which is how this tool
recognises its own files: it never writes over a file it did not write unless `overwrite` is set.
No Ray here (pipelines/train_retriever.py is the command line).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import syvla._compat  # noqa: F401  (torchvision's ops first, however syvla itself was imported)
from syvla import constants as K
from syvla.cli import field, to_dict
from syvla.rl.guidance import ExpertSet, SampleRetriever, clip_encoder
from syvla.rl.retrieval import (DEBUG_CLIP_CFG, PAPER_VIEW_WEIGHTS, ClipImageEncoder, RetrievalConfig, build_clip,
                                images_from_uint8)
from syvla.sim.metaworld import task_texts

WRITTEN_BY = "syvla.rl.retriever_training"
_REPORT_FORMAT = 1
_MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps its learnable temperature at 1/100


@dataclasses.dataclass(frozen=True)
class RetrieverTrainConfig:
    """Contrastive fine-tuning of the retrieval encoder E on an imitation set, and its measurement."""

    # ---- data ---------------------------------------------------------------------------------------
    data: str = field("data/metaworld", "imitation set as RL loads it: a dataset folder (LeRobot, e.g. written by "
                                        "pipelines/collect_sim.py)")
    tasks: str = field("", "comma-separated tasks: Meta-World names (reach-v3) or instruction texts; '' = all")
    max_episodes_per_task: int = field(0, "episodes read per task (0 = all)")
    heldout_fraction: float = field(0.25, "fraction of each task's episodes kept out of training to measure "
                                          "retrieval on (at least 1 per task, at least 1 left to train on)")
    # ---- model -------------------------------------------------------------------------------------
    clip_model: str = field("debug", "open_clip model name (e.g. ViT-B-32) or 'debug': the architecture RL's "
                                     "clip_encoder builds for RLConfig.clip_model")
    clip_checkpoint: str = field("", "local open_clip checkpoint to start from; '' = the random init of seed (for "
                                     "'debug': RL's debug encoder of that seed)")
    # ---- optimisation ------------------------------------------------------------------------------
    steps: int = field(1000, "optimizer steps (debug CLIP on a CPU: ~20 per second at batch_size 64)")
    batch_size: int = field(64, "(anchor, positive) pairs per step: 2 x batch_size frames, each in every view")
    lr: float = field(1e-3, "AdamW learning rate (fine-tuning a pretrained ViT-B-32 wants ~1e-5)")
    weight_decay: float = field(0.0, "AdamW weight decay")
    window: int = field(3, "phase positives: two frames of one episode at most this many frames apart")
    cross_episode_tol: float = field(0.05, "phase term: frames of OTHER episodes of the same task within this "
                                          "normalized time t/(T-1) of a frame are positives too (0 = off)")
    text_weight: float = field(1.0, "weight of the image <-> instruction InfoNCE term")
    phase_weight: float = field(1.0, "weight of the phase (same episode, |dt| <= window) InfoNCE term")
    # ---- measurement -------------------------------------------------------------------------------
    eval_k: int = field(4, "k of the measured top-k retrieval (RetrievalConfig.k: RL debug 2, paper 4)")
    view_weights: tuple[float, ...] = field(PAPER_VIEW_WEIGHTS, "w_v of the measured multi-view similarity, one "
                                                                "per camera in the data's order (App. A)")
    eval_queries: int = field(0, "held-out query frames measured, evenly spaced over them (0 = all)")
    # ---- run ---------------------------------------------------------------------------------------
    log_every: int = field(25, "one progress line every this many steps")
    seed: int = field(0, "seeds the init (without clip_checkpoint), the held-out split, batches and random retrieval")
    device: str = field("cpu", "cpu or cuda[:i]")
    output: str = field("checkpoints/retriever/clip.pt", "checkpoint file to write; the report goes next to it as "
                                                         "<stem>.json")
    overwrite: bool = field(False, "write over an output (or report) file this tool did not write; its own files "
                                   "are always replaced")

    def __post_init__(self):
        object.__setattr__(self, "view_weights", tuple(float(w) for w in self.view_weights))
        for name in ("steps", "lr", "window", "eval_k", "log_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RetrieverTrainConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_episodes_per_task", "weight_decay", "cross_episode_tol", "text_weight", "phase_weight",
                     "eval_queries"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"RetrieverTrainConfig.{name} must be finite and >= 0, got {value}")
        if not math.isfinite(self.lr):
            raise ValueError(f"RetrieverTrainConfig.lr must be finite, got {self.lr}")
        if self.text_weight + self.phase_weight <= 0:
            raise ValueError("RetrieverTrainConfig.text_weight and phase_weight are both 0: nothing to train")
        if self.batch_size < 2:
            raise ValueError(f"RetrieverTrainConfig.batch_size must be >= 2 (negatives come from the batch), "
                             f"got {self.batch_size}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"RetrieverTrainConfig.heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.max_episodes_per_task == 1:
            raise ValueError("RetrieverTrainConfig.max_episodes_per_task must be 0 (all) or >= 2: each task needs a "
                             "training and a held-out episode")
        RetrievalConfig(k=self.eval_k, view_weights=self.view_weights)  # checks the weights, naming them
        if not self.clip_model:
            raise ValueError("RetrieverTrainConfig.clip_model must name a model ('debug' or an open_clip name)")
        if not self.output:
            raise ValueError("RetrieverTrainConfig.output must be a file path")
        if Path(self.output).suffix == ".json":
            raise ValueError(f"RetrieverTrainConfig.output {self.output!r} ends in .json: that name is the report's; "
                             f"give the checkpoint file, e.g. clip.pt")
        if self.device != "cpu" and self.device != "cuda" and not self.device.startswith("cuda:"):
            raise ValueError(f"RetrieverTrainConfig.device must be cpu or cuda[:i], got {self.device!r}")

    @property
    def task_list(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.tasks.split(",") if t.strip())

    @property
    def report_path(self) -> Path:
        return report_path(self.output)


def report_path(checkpoint: str | Path) -> Path:
    """The JSON report that sits next to a checkpoint: clip.pt -> clip.json."""
    return Path(checkpoint).with_suffix(".json")


# --------------------------------------------------------------------------- checks before any heavy work


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_report(path: Path) -> dict | None:
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return report if isinstance(report, dict) and report.get("written_by") == WRITTEN_BY else None


def written_by_this_tool(checkpoint: str | Path) -> bool:
    """True when `checkpoint` and its report are this tool's: the report says so and holds the file's sha256."""
    ckpt = Path(checkpoint)
    report = _read_report(report_path(ckpt))
    return bool(report) and ckpt.is_file() and report.get("checkpoint_sha256") == _sha256(ckpt)


def check_output(checkpoint: str | Path, overwrite: bool = False) -> None:
    """FileExistsError (naming the path) unless writing `checkpoint` and its report replaces only this tool's files.

    `overwrite` allows writing over foreign files, never over a directory."""
    ckpt, report = Path(checkpoint), report_path(checkpoint)
    for path in (ckpt, report):
        if path.is_dir():
            raise FileExistsError(f"{path} is a directory; give the checkpoint a file name, e.g. {path / 'clip.pt'}")
    if overwrite:
        return
    if ckpt.exists() and not written_by_this_tool(ckpt):
        raise FileExistsError(f"{ckpt} exists and was not written by {WRITTEN_BY} (no matching report "
                              f"{report}); it is left as it is. Choose another --output or pass --overwrite true")
    if report.exists() and _read_report(report) is None:
        raise FileExistsError(f"{report} exists and was not written by {WRITTEN_BY}; it is left as it is. "
                              f"Choose another --output or pass --overwrite true")


def check_config(cfg: RetrieverTrainConfig) -> None:
    """Every error that needs no training, from metadata only: the data path, its tasks and cameras, the model
    name, the starting checkpoint, and the output's ownership. Raises ValueError / FileNotFoundError /
    FileExistsError naming the field."""
    from syvla.data.readers import detect_format
    from syvla.data.schema import SchemaError

    path = Path(cfg.data)
    if not path.exists():
        raise FileNotFoundError(f"RetrieverTrainConfig.data: {path} does not exist (collect one with "
                                f"pipelines/collect_sim.py --output {path})")
    try:
        fmt = detect_format(path)
    except SchemaError as e:
        raise ValueError(f"RetrieverTrainConfig.data: {e}") from None
    if fmt == "lerobot":
        _check_lerobot(cfg)
    if cfg.clip_model != "debug":
        import open_clip

        if cfg.clip_model not in open_clip.list_models():
            raise ValueError(f"RetrieverTrainConfig.clip_model {cfg.clip_model!r} is neither 'debug' nor an open_clip "
                             f"model name (open_clip.list_models(), e.g. ViT-B-32)")
    if cfg.clip_checkpoint and not Path(cfg.clip_checkpoint).is_file():
        raise FileNotFoundError(f"RetrieverTrainConfig.clip_checkpoint {cfg.clip_checkpoint!r} is not a local file")
    check_output(cfg.output, cfg.overwrite)


def _check_lerobot(cfg: RetrieverTrainConfig) -> None:
    from syvla.data.lerobot import LeRobotReader

    reader = LeRobotReader(cfg.data)
    counts: dict[str, int] = {}
    for ep in reader.episodes:
        for t in ep.tasks:
            counts[t] = counts.get(t, 0) + 1
    wanted = cfg.task_list
    unknown = [sel for sel, text in zip(wanted, task_texts(wanted)) if text not in counts]
    if unknown:
        raise ValueError(f"RetrieverTrainConfig.tasks: unknown task(s) {unknown} in {cfg.data}; it holds "
                         f"{sorted(counts)}")
    texts = task_texts(wanted) if wanted else sorted(counts)
    cap = cfg.max_episodes_per_task or None
    few = [t for t in texts if min(counts[t], cap or counts[t]) < 2]
    if few:
        raise ValueError(f"RetrieverTrainConfig.tasks: {few} have fewer than 2 episodes in {cfg.data}; each task "
                         f"needs one to train on and one held out")
    if len(reader.views) != len(cfg.view_weights):
        raise ValueError(f"RetrieverTrainConfig.view_weights {cfg.view_weights} gives {len(cfg.view_weights)} weights "
                         f"but {cfg.data} has {len(reader.views)} cameras {reader.views}")


# --------------------------------------------------------------------------- the imitation set, split


def subset(experts: ExpertSet, episodes: Sequence[int]) -> ExpertSet:
    """The given episodes of an expert set (in that order) as an expert set of their own."""
    import pyarrow as pa

    parts, bounds, offset = [], [], 0
    for e in episodes:
        a, b = experts.bounds[int(e)]
        parts.append(experts.table.slice(a, b - a))
        bounds.append((offset, offset + b - a))
        offset += b - a
    return ExpertSet(pa.concat_tables(parts).combine_chunks(), bounds)


def episode_tasks(experts: ExpertSet) -> list[str]:
    """The instruction of each episode (its first frame's)."""
    col = experts.table.column(K.TASK)
    return [col[a].as_py() for a, _ in experts.bounds]


def split_episodes(experts: ExpertSet, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training episodes, held-out episodes): per task, round(fraction * n) held out, at least 1, at most n - 1."""
    rng = np.random.default_rng([seed, 7])
    by_task: dict[str, list[int]] = {}
    for e, task in enumerate(episode_tasks(experts)):
        by_task.setdefault(task, []).append(e)
    train, held = [], []
    for task in sorted(by_task):
        eps = by_task[task]
        if len(eps) < 2:
            raise ValueError(f"task {task!r} has {len(eps)} episode(s); it needs one to train on and one held out")
        n_held = min(len(eps) - 1, max(1, round(heldout_fraction * len(eps))))
        chosen = set(rng.choice(eps, size=n_held, replace=False).tolist())
        held += [e for e in eps if e in chosen]
        train += [e for e in eps if e not in chosen]
    return sorted(train), sorted(held)


def frame_phase(experts: ExpertSet) -> np.ndarray:
    """[N] float64 normalized time of each frame in its episode: t / (T - 1), 0 for a 1-frame episode."""
    out = np.zeros(len(experts), np.float64)
    for a, b in experts.bounds:
        out[a:b] = np.arange(b - a) / max(1, b - a - 1)
    return out


def frame_episodes(experts: ExpertSet) -> np.ndarray:
    """[N] int64 episode position of each frame."""
    return np.repeat(np.arange(experts.num_episodes), [b - a for a, b in experts.bounds])


# --------------------------------------------------------------------------- the losses (pure functions)


def text_infonce(img: torch.Tensor, txt: torch.Tensor, task: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric image <-> instruction InfoNCE, averaged over views.

    img [V, M, D] unit-norm frame embeddings, txt [T, D] unit-norm instruction embeddings, task [M] int64 in
    [0, T) (each frame's instruction), scale: the logit scale (1 / temperature).
    image -> text: cross-entropy over the T instructions. text -> image: for each instruction present in
    the batch, the mean log-softmax (over the M frames) of its own frames (multi-positive InfoNCE).
    """
    logits = scale * torch.einsum("vmd,td->vmt", img, txt)  # [V, M, T]
    v, m, t = logits.shape
    i2t = F.cross_entropy(logits.reshape(v * m, t), task.repeat(v))
    pos = (task[None, :] == torch.arange(t, device=task.device)[:, None]).to(logits.dtype)  # [T, M]
    present = pos.sum(1) > 0
    logp = logits.transpose(1, 2).log_softmax(dim=2)  # [V, T, M]
    t2i = -(logp * pos).sum(2)[:, present] / pos.sum(1)[present]  # [V, T_present]
    return 0.5 * (i2t + t2i.mean())


def phase_infonce(z: torch.Tensor, episode: torch.Tensor, t: torch.Tensor, window: int, scale: torch.Tensor,
                  task: torch.Tensor | None = None, phase: torch.Tensor | None = None,
                  cross_episode_tol: float = 0.0) -> torch.Tensor:
    """NT-Xent over the 2B frames of B (anchor, positive) pairs, averaged over views.

    z [V, 2B, D] unit-norm embeddings: rows 0..B-1 the anchors, B..2B-1 their positives (frame i's partner is
    i +- B); episode, t [2B] int64: each frame's episode and index in it. Every other frame of the batch is
    a negative, except frames of frame i's episode at most `window` frames from it (near-duplicates of one
    phase, incl. repeated draws), which are left out of its softmax.
    With cross_episode_tol > 0, frames of OTHER episodes of the same `task` [2B] whose normalized time
    `phase` [2B] (t / (T - 1)) is within that tolerance are positives as well (multi-positive InfoNCE: the
    mean log-probability of the positives, as in SupCon), so one phase of a task gathers across episodes.
    """
    v, b2, _ = z.shape
    b = b2 // 2
    idx = torch.arange(b2, device=z.device)
    partner = (idx + b) % b2
    same_ep = episode[:, None] == episode[None, :]
    pos = torch.zeros(b2, b2, dtype=torch.bool, device=z.device)
    pos[idx, partner] = True
    if cross_episode_tol > 0:
        close = (phase[:, None] - phase[None, :]).abs() <= cross_episode_tol
        pos |= ~same_ep & (task[:, None] == task[None, :]) & close
    left_out = same_ep & ((t[:, None] - t[None, :]).abs() <= window) & ~pos  # incl. self
    logp = (scale * torch.einsum("vid,vjd->vij", z, z)).masked_fill(left_out[None], float("-inf")).log_softmax(-1)
    per_frame = torch.where(pos[None], logp, torch.zeros((), device=z.device)).sum(-1) / pos.sum(-1)  # [V, 2B]
    return -per_frame.mean()


# --------------------------------------------------------------------------- batches


class FrameBank:
    """The training frames decoded once: images uint8 [N, V, S, S, 3] (S = min(data side, encoder input side);
    the encoder resizes the rest of the way), with each frame's episode, index in it and task id."""

    def __init__(self, experts: ExpertSet, cameras: Sequence[str], encoder_side: int, task_ids: Mapping[str, int],
                 batch: int = 256):
        from syvla.data import images as img

        first = img.decode(experts.table.column(K.IMAGES)[0].as_py()[0], "expert frame 0")
        side = min(int(encoder_side), int(first.shape[0]))
        n = len(experts)
        self.images = torch.from_numpy(np.concatenate(
            [experts.views(np.arange(i, min(n, i + batch)), cameras, side) for i in range(0, n, batch)]))
        self.episode = torch.from_numpy(frame_episodes(experts))
        starts = np.array([a for a, _ in experts.bounds], np.int64)
        self.time = torch.arange(n) - torch.from_numpy(starts)[self.episode]
        self.phase = torch.from_numpy(frame_phase(experts)).float()
        tasks = episode_tasks(experts)
        self.task = torch.tensor([task_ids[tasks[e]] for e in self.episode.tolist()], dtype=torch.int64)
        self.bounds = np.array(experts.bounds, np.int64)  # [E, 2]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def sample_pairs(self, batch_size: int, window: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """B anchors (a uniform episode, then a uniform frame of it) and for each a positive of the same episode,
        uniform among the frames 1..window away (the anchor itself only in a 1-frame episode). Rows [B], [B]."""
        eps = rng.integers(len(self.bounds), size=batch_size)
        start, stop = self.bounds[eps, 0], self.bounds[eps, 1]
        anchor = start + (rng.random(batch_size) * (stop - start)).astype(np.int64)
        lo, hi = np.maximum(start, anchor - window), np.minimum(stop - 1, anchor + window)
        n_other = hi - lo  # frames in [lo, hi] other than the anchor
        pick = lo + (rng.random(batch_size) * np.maximum(n_other, 1)).astype(np.int64)
        positive = np.where(n_other > 0, pick + (pick >= anchor), anchor)
        return anchor, positive


@dataclasses.dataclass
class _Trainer:
    model: torch.nn.Module
    encoder: ClipImageEncoder  # shares model.visual
    bank: FrameBank
    tokens: torch.Tensor  # [T, L] the instructions, tokenized
    cfg: RetrieverTrainConfig

    def losses(self, anchor: np.ndarray, positive: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, text, phase) of one batch of pair rows."""
        dev = self.encoder.mean.device
        rows = torch.from_numpy(np.concatenate([anchor, positive]))
        emb = self.encoder.embed(images_from_uint8(self.bank.images[rows]).to(dev))  # [2B, V, D]
        emb = emb.transpose(0, 1)  # [V, 2B, D]
        txt = F.normalize(self.model.encode_text(self.tokens), dim=-1)
        scale = self.model.logit_scale.clamp(max=_MAX_LOGIT_SCALE).exp()
        text = text_infonce(emb, txt, self.bank.task[rows].to(dev), scale)
        bank = self.bank
        phase = phase_infonce(emb, bank.episode[rows].to(dev), bank.time[rows].to(dev), self.cfg.window, scale,
                              bank.task[rows].to(dev), bank.phase[rows].to(dev), self.cfg.cross_episode_tol)
        total = self.cfg.text_weight * text + self.cfg.phase_weight * phase
        return total, text, phase


# --------------------------------------------------------------------------- measurement


def measure_retrieval(index_set: ExpertSet, query_set: ExpertSet, encoders: Mapping[str, ClipImageEncoder],
                      retrieval: RetrievalConfig, max_queries: int = 0, seed: int = 0) -> dict[str, dict]:
    """Top-k retrieval of held-out frames from an index of other episodes, the way RL retrieves.

    Every frame of `query_set` (or `max_queries` of them, evenly spaced) is a query; `SampleRetriever` over
    `index_set` picks its k rows with each encoder (mode "similar"), and once more uniformly at random
    (mode "random", the "w/o Similar Sample" ablation). Per method: precision_at_k (share of retrieved
    frames with the query's instruction), phase_error (mean |t/(T-1) of the query - that of each retrieved
    frame|, 0..1; random is ~1/3), phase_error_same_task (the same, over same-task hits only), and
    mean_similarity (the weighted multi-view cosine of the picks; for "random", under the first encoder).
    Returns {method: metrics}, "random" last.
    """
    if not encoders:
        raise ValueError("measure_retrieval needs at least one encoder")
    n_q = len(query_set)
    rows = np.arange(n_q) if not max_queries or max_queries >= n_q else \
        np.unique(np.linspace(0, n_q - 1, max_queries).round().astype(np.int64))
    queries = query_set.samples(rows)
    q_task = np.asarray(query_set.table.column(K.TASK).to_pylist(), dtype=object)[rows]
    q_phase = frame_phase(query_set)[rows]
    i_task = np.asarray(index_set.table.column(K.TASK).to_pylist(), dtype=object)
    i_phase = frame_phase(index_set)
    cfg = dataclasses.replace(retrieval, mode="similar")
    out, first = {}, None
    for name, encoder in encoders.items():
        retriever = SampleRetriever(index_set, encoder, cfg, seed=seed)
        first = first or retriever
        out[name] = _score(retriever.retrieve(queries), q_task, q_phase, i_task, i_phase)
    rand = copy.copy(first)  # the first encoder's index (not encoded again), picked from at random (seeded)
    rand.cfg = dataclasses.replace(retrieval, mode="random")
    out["random"] = _score(rand.retrieve(queries), q_task, q_phase, i_task, i_phase)
    return out


def _score(found, q_task, q_phase, i_task, i_phase) -> dict:
    same = i_task[found.rows] == q_task[:, None]  # [Q, k]
    err = np.abs(i_phase[found.rows] - q_phase[:, None])
    return {"precision_at_k": float(same.mean()), "phase_error": float(err.mean()),
            "phase_error_same_task": float(err[same].mean()) if same.any() else float("nan"),
            "mean_similarity": found.mean_similarity, "queries": int(found.rows.shape[0]),
            "k": int(found.rows.shape[1])}


def format_quality(quality: Mapping[str, Mapping], title: str = "") -> str:
    """The measured table, one line per method."""
    first = next(iter(quality.values()))
    lines = [title] if title else []
    lines.append(f"{'method':<10} {'precision@' + str(first['k']):>12} {'phase err':>10} {'(same task)':>12} "
                 f"{'mean sim':>9}   ({first['queries']} held-out queries)")
    for name, m in quality.items():
        lines.append(f"{name:<10} {m['precision_at_k']:>12.3f} {m['phase_error']:>10.3f} "
                     f"{m['phase_error_same_task']:>12.3f} {m['mean_similarity']:>9.4f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- training


def clip_tokenizer(model_name: str):
    """open_clip's tokenizer for `model_name`; "debug" uses open_clip's BPE tokenizer at its context length."""
    import open_clip

    if model_name == "debug":
        return open_clip.SimpleTokenizer(context_length=DEBUG_CLIP_CFG["text_cfg"]["context_length"])
    return open_clip.get_tokenizer(model_name)


@dataclasses.dataclass
class TrainResult:
    model: torch.nn.Module  # the trained open_clip model (image and text towers)
    checkpoint: Path
    report: Path
    quality: dict  # {method: metrics}, see measure_retrieval
    eval_loss_before: float  # the fixed evaluation batch's total loss before training
    eval_loss_after: float
    losses: list[float]  # total loss of every step


def train_retriever(cfg: RetrieverTrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Check, load, split, train, save, reload (round trip), measure, report. See the module docstring."""
    check_config(cfg)
    t0 = time.time()
    experts = ExpertSet.load(cfg.data, chunk_len=1, tasks=cfg.task_list,
                             max_episodes_per_task=cfg.max_episodes_per_task)
    datasets = sorted(set(experts.datasets.tolist()))
    if len(datasets) != 1:
        raise ValueError(f"RetrieverTrainConfig.data holds several embodiments {datasets}; train one at a time")
    cameras = experts.cameras(datasets[0])
    if len(cameras) != len(cfg.view_weights):
        raise ValueError(f"RetrieverTrainConfig.view_weights gives {len(cfg.view_weights)} weights but the data has "
                         f"{len(cameras)} cameras {cameras}")
    train_eps, held_eps = split_episodes(experts, cfg.heldout_fraction, cfg.seed)
    train_set, held_set = subset(experts, train_eps), subset(experts, held_eps)
    tasks = sorted(set(episode_tasks(experts)))
    log(f"[train_retriever] {cfg.data}: {len(tasks)} task(s), {len(train_eps)} training episodes "
        f"({len(train_set)} frames), {len(held_eps)} held out ({len(held_set)} frames), cameras {list(cameras)}; "
        f"loaded in {time.time() - t0:.1f} s")
    if len(tasks) == 1:
        log("[train_retriever] one task only: same-task precision is 1 for every method; phase error still measures")

    device = torch.device(cfg.device)
    model = build_clip(cfg.clip_model, cfg.clip_checkpoint, seed=cfg.seed, device=device)
    encoder = ClipImageEncoder.from_clip(model).to(device)
    bank = FrameBank(train_set, cameras, encoder.image_size[0], {t: i for i, t in enumerate(tasks)})
    tokens = clip_tokenizer(cfg.clip_model)(tasks).to(device)
    trainer = _Trainer(model, encoder, bank, tokens, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 3])
    eval_pairs = bank.sample_pairs(cfg.batch_size, cfg.window, np.random.default_rng([cfg.seed, 5]))
    with torch.no_grad():
        before = float(trainer.losses(*eval_pairs)[0])
    losses: list[float] = []
    t1, window_t = time.time(), time.time()
    for step in range(1, cfg.steps + 1):
        total, text, phase = trainer.losses(*bank.sample_pairs(cfg.batch_size, cfg.window, rng))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
        if step % cfg.log_every == 0 or step == cfg.steps:
            n = step % cfg.log_every or cfg.log_every
            temp = float(model.logit_scale.detach().clamp(max=_MAX_LOGIT_SCALE).exp().reciprocal())
            log(f"[train_retriever] step {step}/{cfg.steps}: loss {total.item():.3f} (text {text.item():.3f}, phase "
                f"{phase.item():.3f}), mean of last {n} {np.mean(losses[-n:]):.3f}, temperature {temp:.4f}, "
                f"{n / max(1e-9, time.time() - window_t):.1f} steps/s")
            window_t = time.time()
    train_s = time.time() - t1
    with torch.no_grad():
        after = float(trainer.losses(*eval_pairs)[0])
        temp = float(model.logit_scale.clamp(max=_MAX_LOGIT_SCALE).exp().reciprocal())

    ckpt = Path(cfg.output)
    check_output(ckpt, cfg.overwrite)  # again: the folder may have changed during training
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.with_name(f".{ckpt.name}.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(ckpt)

    # The round trip, through the loader RL uses: the same embeddings as the trained tower.
    loaded = clip_encoder(cfg.clip_model, str(ckpt), cfg.device)
    probe = images_from_uint8(bank.images[:8]).to(device)
    round_trip = float((loaded(probe) - encoder(probe)).abs().max())
    if round_trip > 1e-5:
        raise RuntimeError(f"{ckpt} does not reload to the trained encoder (max embedding difference {round_trip:.2e})")

    untrained = clip_encoder(cfg.clip_model, cfg.clip_checkpoint, cfg.device, cfg.seed)
    t2 = time.time()
    quality = measure_retrieval(train_set, held_set, {"trained": loaded, "untrained": untrained},
                                RetrievalConfig(k=cfg.eval_k, view_weights=cfg.view_weights), cfg.eval_queries,
                                cfg.seed)
    report = {
        "written_by": WRITTEN_BY, "format": _REPORT_FORMAT, "checkpoint": str(ckpt.resolve()),
        "checkpoint_sha256": _sha256(ckpt), "clip_model": cfg.clip_model,
        "load_with": f"clip_encoder({cfg.clip_model!r}, {str(ckpt)!r}) / --clip_model {cfg.clip_model} "
                     f"--clip_checkpoint {ckpt}",
        "config": to_dict(cfg),
        "data": {"tasks": tasks, "cameras": list(cameras), "train_episodes": len(train_eps),
                 "heldout_episodes": len(held_eps), "train_frames": len(train_set), "heldout_frames": len(held_set),
                 "heldout_episode_positions": held_eps},
        "training": {"temperature": "learnable (CLIP logit_scale, clamped to >= 0.01)", "final_temperature": temp,
                     "eval_loss_before": before, "eval_loss_after": after,
                     "first_steps_loss": float(np.mean(losses[:cfg.log_every])),
                     "last_steps_loss": float(np.mean(losses[-cfg.log_every:])),
                     "seconds": train_s, "round_trip_max_abs_diff": round_trip},
        "quality": quality, "measure_seconds": time.time() - t2,
    }
    path = report_path(ckpt)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=True))
    tmp.replace(path)
    log(f"[train_retriever] eval-batch loss {before:.3f} -> {after:.3f} in {train_s:.0f} s; wrote {ckpt} and {path}")
    return TrainResult(model, ckpt, path, quality, before, after, losses)
