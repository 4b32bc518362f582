"""Similar-sample retrieval from the expert (imitation-learning) set (§3.3, App. A).

Each observation is encoded per camera view by a CLIP image encoder E; two
samples x, y are compared by the weighted multi-view cosine similarity

    sim(x, y) = sum_v w_v cos(E(x_v), E(y_v)),   w = (0.83, 0.083, 0.083)  (App. A: centre, left, right wrist)

The expert set is encoded once into a fixed `ExpertIndex`; at RL time only the
rollout samples are encoded and looked up.

Speed: embeddings are L2-normalized per view, so cos is a dot product and
sim(x, y) = <concat_v(w_v E(x_v)), concat_v(E(y_v))>: the whole lookup is one
matmul of the weight-scaled queries [Q, V*D] against the flattened index
[N, V*D], done in row blocks with a running top-k to bound memory.

open_clip is imported lazily (it pulls in torchvision; `import syvla` first
installs the CPU shim it needs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import syvla._compat  # noqa: F401  (torchvision's ops first, however syvla itself was imported)
from syvla.cli import field

# App. A: weight 0.83 for the centre camera, 0.083 for each wrist camera.
PAPER_VIEW_WEIGHTS = (0.83, 0.083, 0.083)
_INDEX_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """How expert samples are picked for each rollout sample."""

    k: int = field(4, "expert samples retrieved per rollout sample (the paper does not give it)")
    view_weights: tuple[float, ...] = field(PAPER_VIEW_WEIGHTS, "w_v, in the index's view order (App. A)")
    mode: str = field("similar", '"similar" (§3.3) or "random": the ablation "w/o Similar Sample" (Table 3)')
    index_dtype: str = field("float16", 'storage of the index embeddings: "float16" halves memory, "float32" is exact')

    def __post_init__(self):
        if self.k <= 0:
            raise ValueError(f"RetrievalConfig.k must be > 0, got {self.k}")
        object.__setattr__(self, "view_weights", tuple(float(w) for w in self.view_weights))
        _check_weights(self.view_weights, "RetrievalConfig.view_weights")
        if self.mode not in ("similar", "random"):
            raise ValueError(f"RetrievalConfig.mode must be 'similar' or 'random', got {self.mode!r}")
        if self.index_dtype not in ("float16", "float32"):
            raise ValueError(f"RetrievalConfig.index_dtype must be 'float16' or 'float32', got {self.index_dtype!r}")


def _check_weights(weights: Sequence[float], name: str) -> None:
    if not weights or any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{name} must be finite, >= 0 and not all zero (the paper's w_v >= 0), got {tuple(weights)}")


# --------------------------------------------------------------------------- encoder


class ClipImageEncoder(torch.nn.Module):
    """CLIP image tower E(.) applied per view: images [B, V, 3, H, W] in [0, 1] -> [B, V, D], unit norm.

    Images are resized (bilinear, antialiased) straight to the tower's input
    size and normalized with its mean/std. No centre crop: wrist cameras keep
    their borders, and queries and index go through the same transform.
    """

    def __init__(self, visual: torch.nn.Module, image_size: tuple[int, int], mean: Sequence[float],
                 std: Sequence[float]):
        super().__init__()
        self.visual = visual.eval()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_clip(cls, model: torch.nn.Module) -> "ClipImageEncoder":
        """The image tower of an open_clip CLIP model, with the model's own input size, mean and std."""
        import open_clip

        pp = open_clip.get_model_preprocess_cfg(model)
        size = pp.get("size", model.visual.image_size)
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(model.visual, size, pp.get("mean", open_clip.OPENAI_DATASET_MEAN),
                   pp.get("std", open_clip.OPENAI_DATASET_STD))

    @classmethod
    def from_preset(cls, name: str = "debug", seed: int = 0) -> "ClipImageEncoder":
        """`debug`: a tiny random ViT (1 layer, width 32, 32 px, 16-d embeddings); builds in milliseconds."""
        if name != "debug":
            raise KeyError(f"unknown ClipImageEncoder preset {name!r}; choose 'debug' or use from_pretrained")
        return cls.from_clip(build_clip("debug", seed=seed))

    @classmethod
    def from_pretrained(cls, model_name: str, checkpoint_path: str, device="cpu",
                        precision: str = "fp32") -> "ClipImageEncoder":
        """Load an open_clip model from a LOCAL checkpoint file, e.g. ("ViT-B-32", "/ckpt/vit_b_32.bin").

        `model_name` is one of `open_clip.list_models()` (a built-in config: no
        download) or "debug" (the tiny CLIP of `build_clip`, e.g. fine-tuned by
        syvla.rl.retriever_training). Only the image tower is kept.
        """
        if not os.path.isfile(checkpoint_path):
            # open_clip would read a non-file as a pretrained *tag* and try to download it
            raise FileNotFoundError(f"CLIP checkpoint {checkpoint_path!r} is not a local file")
        return cls.from_clip(build_clip(model_name, checkpoint_path, device=device, precision=precision))

    @property
    def embed_dim(self) -> int:
        return int(self.visual.output_dim)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """`forward` with autograd (fine-tuning, syvla.rl.retriever_training): [B, V, 3, H, W] -> [B, V, D]."""
        if images.dim() != 5 or images.shape[2] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be float [B, V, 3, H, W] in [0, 1], got {images.dtype} "
                             f"{tuple(images.shape)}")
        b, v = images.shape[:2]
        x = images.reshape(b * v, *images.shape[2:]).to(self.mean.device, torch.float32)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        x = (x - self.mean) / self.std
        dtype = next(self.visual.parameters()).dtype
        emb = self.visual(x.to(dtype)).float()
        return F.normalize(emb, dim=-1).view(b, v, -1)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, V, 3, H, W] float in [0, 1] -> embeddings [B, V, D] float32, L2-normalized per view."""
        return self.embed(images)


# The debug CLIP: the tiny ViT above and a 1-layer, 16-wide text tower over open_clip's own BPE
# vocabulary (49408 tokens, 32 per text), so that syvla.rl.retriever_training can fine-tune it on
# instruction text with open_clip's tokenizer. The image tower is built first, so the text tower's
# size does not change the image weights a seed gives.
DEBUG_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}


def build_clip(model_name: str = "debug", checkpoint_path: str = "", seed: int = 0, device="cpu",
               precision: str = "fp32") -> torch.nn.Module:
    """A whole open_clip CLIP model (image and text towers): "debug" (DEBUG_CLIP_CFG) or a built-in
    open_clip config; weights from the LOCAL `checkpoint_path` when given, else a random init drawn
    from `seed` (the global torch RNG is left as it was). Nothing is downloaded."""
    if checkpoint_path and not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(f"CLIP checkpoint {checkpoint_path!r} is not a local file")
    if model_name == "debug" and precision != "fp32":
        raise ValueError(f"the debug CLIP runs in fp32, got precision={precision!r}")
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model_name == "debug":
            cfg = DEBUG_CLIP_CFG
            model = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=open_clip.CLIPVisionCfg(**cfg["vision_cfg"]),
                                   text_cfg=open_clip.CLIPTextCfg(**cfg["text_cfg"]))
            if checkpoint_path:
                open_clip.load_checkpoint(model, checkpoint_path)  # strict: every key of the debug CLIP
            return model.to(device)
        return open_clip.create_model(model_name, pretrained=checkpoint_path or None, device=device,
                                      precision=precision)


def images_from_uint8(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [B, V, H, W, 3] (camera frames) -> float [B, V, 3, H, W] in [0, 1]."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 [B, V, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 1, 4, 2, 3).float().div_(255.0)


# --------------------------------------------------------------------------- index


def _as_float_tensor(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        with warnings.catch_warnings():  # read-only memmaps: torch warns, we never write through them
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(x)
    return torch.as_tensor(x)


class ExpertIndex:
    """Per-view CLIP embeddings of the expert set: embeddings [N, V, D] (float16/32), sample_ids [N] int64.

    `topk` returns row positions; `sample_ids[positions]` maps them to the
    caller's ids (e.g. rows of the expert dataset). Embeddings must be unit
    norm per view (the encoder's output); the constructor checks a sample.
    """

    def __init__(self, embeddings: np.ndarray, sample_ids: np.ndarray | Sequence[int], views: Sequence[str] = ()):
        if embeddings.ndim != 3:
            raise ValueError(f"embeddings must be [N, V, D], got shape {embeddings.shape}")
        if embeddings.dtype not in (np.float16, np.float32):
            raise ValueError(f"embeddings must be float16 or float32, got {embeddings.dtype}")
        if not embeddings.flags.c_contiguous:
            raise ValueError("embeddings must be C-contiguous (the flattened [N, V*D] view must not copy)")
        ids = np.asarray(sample_ids, dtype=np.int64)
        if ids.shape != (embeddings.shape[0],):
            raise ValueError(f"sample_ids must be [N={embeddings.shape[0]}], got {ids.shape}")
        views = tuple(views)
        if views and len(views) != embeddings.shape[1]:
            raise ValueError(f"views {views} must name each of the {embeddings.shape[1]} views")
        self.embeddings = embeddings
        self.sample_ids = ids
        self.views = views
        self._device_flat: torch.Tensor | None = None  # set by `to(device)`
        self._check_normalized()

    def _check_normalized(self, n_check: int = 1024) -> None:
        n = len(self)
        if n == 0:
            return
        rows = np.random.default_rng(0).choice(n, size=min(n, n_check), replace=False)
        norms = np.linalg.norm(self.embeddings[np.sort(rows)].astype(np.float32), axis=-1)
        if not np.allclose(norms, 1.0, atol=2e-2):
            raise ValueError(f"index embeddings must be L2-normalized per view (norms seen: "
                             f"{norms.min():.3f}..{norms.max():.3f})")

    def to(self, device) -> "ExpertIndex":
        """Keep a copy of the flattened embeddings on `device` (e.g. a learner's GPU) for `topk`; returns self.

        "cpu" drops the copy: CPU lookups read the numpy array in place.
        """
        device = torch.device(device)
        self._device_flat = None if device.type == "cpu" else \
            _as_float_tensor(self.embeddings).view(len(self), -1).to(device)
        return self

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[2])

    @classmethod
    def build(cls, encoder: ClipImageEncoder, batches: Iterable[tuple[Sequence[int], torch.Tensor]],
              dtype: str = "float16", views: Sequence[str] = ()) -> "ExpertIndex":
        """Encode the expert set. batches yields (sample_ids [b], images [b, V, 3, H, W] float in [0, 1])."""
        np_dtype = {"float16": np.float16, "float32": np.float32}[dtype]
        embs, ids = [], []
        for batch_ids, images in batches:
            embs.append(encoder(images).cpu().numpy().astype(np_dtype, copy=False))
            ids.append(np.asarray(batch_ids, dtype=np.int64).reshape(-1))
        if not embs:
            raise ValueError("ExpertIndex.build got no batches")
        return cls(np.ascontiguousarray(np.concatenate(embs)), np.concatenate(ids), views)

    def save(self, path: str) -> None:
        """A directory: embeddings.npy, sample_ids.npy, meta.json (no pickle anywhere)."""
        os.makedirs(path, exist_ok=True)
        np.save(os.path.join(path, "embeddings.npy"), self.embeddings, allow_pickle=False)
        np.save(os.path.join(path, "sample_ids.npy"), self.sample_ids, allow_pickle=False)
        with open(os.path.join(path, "meta.json"), "w") as f:
            json.dump({"format": _INDEX_FORMAT, "views": list(self.views), "size": len(self)}, f)

    @classmethod
    def load(cls, path: str, mmap: bool = False) -> "ExpertIndex":
        """mmap=True maps the embeddings read-only: processes on one node share the page cache."""
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        if meta.get("format") != _INDEX_FORMAT:
            raise ValueError(f"expert index at {path} has format {meta.get('format')}, expected {_INDEX_FORMAT}")
        emb = np.load(os.path.join(path, "embeddings.npy"), mmap_mode="r" if mmap else None, allow_pickle=False)
        ids = np.load(os.path.join(path, "sample_ids.npy"), allow_pickle=False)
        return cls(emb, ids, meta["views"])

    def _weighted_queries(self, query, view_weights: Sequence[float]) -> torch.Tensor:
        """query [Q, V, D] -> unit-norm per view, scaled by w_v, flattened: [Q, V*D] float32."""
        q = _as_float_tensor(query).to(torch.float32)
        if q.dim() != 3 or q.shape[1:] != (self.num_views, self.dim):
            raise ValueError(f"query must be [Q, V={self.num_views}, D={self.dim}], got {tuple(q.shape)}")
        w = tuple(float(x) for x in view_weights)
        if len(w) != self.num_views:
            raise ValueError(f"view_weights {w} must give one weight per view ({self.num_views})")
        _check_weights(w, "view_weights")
        q = F.normalize(q, dim=-1) * torch.tensor(w, dtype=torch.float32).view(1, -1, 1)
        return q.reshape(q.shape[0], -1)

    def scores(self, query, rows, view_weights: Sequence[float] = PAPER_VIEW_WEIGHTS) -> torch.Tensor:
        """Weighted similarity of query [Q, V, D] to given index rows [Q, k]: [Q, k] float32."""
        qf = self._weighted_queries(query, view_weights)
        rows = torch.as_tensor(rows, dtype=torch.int64)
        picked = _as_float_tensor(self.embeddings[rows.numpy().reshape(-1)]).float()
        picked = picked.reshape(*rows.shape, -1)  # [Q, k, V*D]
        return torch.einsum("qkd,qd->qk", picked, qf)

    def topk(self, query, k: int, view_weights: Sequence[float] = PAPER_VIEW_WEIGHTS,
             block_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The k most similar index rows per query under sum_v w_v cos(., .).

        query [Q, V, D] (any norm; normalized here), float32/16, numpy or torch.
        Returns (scores [Q, k] float32, descending; indices [Q, k] int64 row positions), on the
        index's device (see `to`).
        block_rows bounds the score block to [Q, block_rows] (default ~64 MB).
        """
        n = len(self)
        if not 0 < k <= n:
            raise ValueError(f"k must be in [1, {n}], got {k}")
        flat = self._device_flat
        if flat is None:
            flat = _as_float_tensor(self.embeddings).view(n, -1)  # [N, V*D], no copy
        qf = self._weighted_queries(query, view_weights).to(flat.device)  # [Q, V*D]
        if block_rows is None:
            block_rows = max(1024, (1 << 24) // max(1, qf.shape[0]))
        best_s = best_i = None
        for start in range(0, n, block_rows):
            block = flat[start:start + block_rows]
            if block.dtype != torch.float32:  # fp16 GEMM is slow on CPUs: upcast one block at a time (fp32 scores)
                block = block.float()
            s = qf @ block.T  # [Q, b]
            bs, bi = s.topk(min(k, s.shape[1]), dim=1)
            bi += start
            if best_s is None:
                best_s, best_i = bs, bi
            else:
                cat_s, cat_i = torch.cat([best_s, bs], 1), torch.cat([best_i, bi], 1)
                best_s, pos = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
                best_i = cat_i.gather(1, pos)
        return best_s, best_i


def random_baseline(index: ExpertIndex, query, k: int, view_weights: Sequence[float] = PAPER_VIEW_WEIGHTS,
                    rng: np.random.Generator | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ablation "w/o Similar Sample" (Table 3): k distinct uniformly random expert rows per query.

    Same signature and outputs as `ExpertIndex.topk` (scores [Q, k] descending,
    indices [Q, k]); the scores are the real weighted similarities of the
    random picks, so a log can compare them with the retrieved ones.
    """
    n = len(index)
    if not 0 < k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    q = _as_float_tensor(query)
    rows = np.stack([rng.choice(n, size=k, replace=False) for _ in range(q.shape[0])])
    s = index.scores(q, rows, view_weights)
    s, order = s.sort(dim=1, descending=True)
    return s, torch.from_numpy(rows).gather(1, order)


def retrieve(index: ExpertIndex, query, cfg: RetrievalConfig,
             rng: np.random.Generator | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert rows for each rollout query [Q, V, D] as `cfg.mode` says: (scores [Q, k], indices [Q, k])."""
    if cfg.mode == "random":
        return random_baseline(index, query, cfg.k, cfg.view_weights, rng)
    return index.topk(query, cfg.k, cfg.view_weights)
