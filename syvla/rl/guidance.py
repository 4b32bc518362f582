"""Similar-Sample Guidance (§3.3, App. A): the imitation-learning set, pre-encoded, and retrieval from it.

    experts = ExpertSet.load("data/metaworld", chunk_len=50, tasks=("reach-v3",))
    retriever = SampleRetriever(experts, ClipImageEncoder.from_preset("debug"), RetrievalConfig(k=4))
    found = retriever.retrieve(rollout_samples)            # rows [Q, k], scores [Q, k]
    batch_rows = retriever.samples(found.rows.reshape(-1))  # model Samples, advantage 1.0 later

`ExpertSet` holds the demonstrations as chunked frames (the same chunks
fine-tuning trained on, `syvla.data.chunking.add_chunks`), with the episode
bounds the value model's Monte-Carlo warm-up and the "standard advantage"
ablation need. `SampleRetriever` encodes every frame once per camera view with
CLIP into one `ExpertIndex` per embodiment ("pre-encode the IL dataset ... a fixed
vector retrieval database", App. A), so at RL time only the rollout frames are
encoded. No Ray here (`syvla.rl.actors.Retriever` wraps it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from syvla import constants as K
from syvla.data import images as img
from syvla.data.chunking import add_chunks, row_to_sample
from syvla.data.columns import combine, episode_bounds
from syvla.model.sample import Sample
from syvla.rl.advantages import monte_carlo_returns
from syvla.rl.retrieval import ClipImageEncoder, ExpertIndex, RetrievalConfig, images_from_uint8, retrieve
from syvla.sim.metaworld import task_texts

_KEEP = (K.DATASET, K.EPISODE_ID, K.FRAME_INDEX, K.TASK, K.COT, K.IMAGE_VIEWS, K.IMAGES, K.STATE, K.SUCCESS,
         K.KIND, K.CONVERSATION, K.ACTIONS, K.ACTION_MASK)


class ExpertSet:
    """Chunked imitation frames: row i is frame i with its action chunk; episodes are contiguous."""

    def __init__(self, table: pa.Table, bounds: Sequence[tuple[int, int]]):
        missing = [c for c in (K.DATASET, K.IMAGE_VIEWS, K.IMAGES, K.STATE, K.ACTIONS, K.ACTION_MASK, K.TASK)
                   if c not in table.column_names]
        if missing:
            raise KeyError(f"expert table lacks column(s) {missing} (chunk it with add_chunks first)")
        if table.num_rows == 0:
            raise ValueError("the expert set is empty")
        self.table = table
        self.bounds = [(int(a), int(b)) for a, b in bounds]
        if not self.bounds or self.bounds[0][0] != 0 or self.bounds[-1][1] != table.num_rows or any(
                b0[1] != b1[0] for b0, b1 in zip(self.bounds, self.bounds[1:])):
            raise ValueError("ExpertSet bounds must tile the table's rows episode by episode")
        self._episode_of = np.repeat(np.arange(len(self.bounds)), [b - a for a, b in self.bounds])
        ok = combine(table.column(K.SUCCESS)).to_numpy(zero_copy_only=False) if K.SUCCESS in table.column_names \
            else np.ones(table.num_rows, dtype=object)
        self.success = np.array([bool(ok[a]) if ok[a] is not None else True for a, _ in self.bounds])
        self.datasets = combine(table.column(K.DATASET)).to_numpy(zero_copy_only=False)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_tables(cls, tables: Iterable[pa.Table], chunk_len: int, tasks: Sequence[str] = (),
                    max_episodes_per_task: int = 0) -> "ExpertSet":
        """Robot frames of FRAME_SCHEMA tables (whole episodes), optionally only `tasks`, chunked."""
        texts = set(task_texts(tasks)) if tasks else None
        parts, bounds, per_task, offset = [], [], {}, 0
        for table in tables:
            table = table.filter(pc.equal(table.column(K.KIND), K.KIND_ROBOT))
            if texts is not None:
                table = table.filter(pc.is_in(table.column(K.TASK), value_set=pa.array(sorted(texts), pa.string())))
            if table.num_rows == 0:
                continue
            chunked = add_chunks(table, chunk_len)
            chunked = chunked.select([c for c in _KEEP if c in chunked.column_names])
            for start, stop in episode_bounds(chunked, K.DATASET, K.EPISODE_ID):
                task = chunked.column(K.TASK)[start].as_py()
                if max_episodes_per_task and per_task.get(task, 0) >= max_episodes_per_task:
                    continue
                per_task[task] = per_task.get(task, 0) + 1
                parts.append(chunked.slice(start, stop - start))
                bounds.append((offset, offset + stop - start))
                offset += stop - start
        if not parts:
            raise ValueError(f"no robot frames{f' of tasks {sorted(texts)}' if texts else ''} in the expert data")
        return cls(pa.concat_tables(parts).combine_chunks(), bounds)

    @classmethod
    def load(cls, path: str | Path, chunk_len: int, tasks: Sequence[str] = (),
             max_episodes_per_task: int = 0) -> "ExpertSet":
        """Read a dataset (LeRobot, RLDS; `syvla.data.readers.read_dataset`) as an expert set.

        LeRobot datasets are filtered on their metadata first, so only the chosen
        episodes' videos are decoded.
        """
        from syvla.data.readers import detect_format, read_dataset

        if detect_format(path) != "lerobot" or not (tasks or max_episodes_per_task):
            return cls.from_tables(read_dataset(path), chunk_len, tasks, max_episodes_per_task)
        from syvla.data.lerobot import LeRobotReader
        from syvla.data.schema import conform

        reader = LeRobotReader(path)
        texts, taken, chosen = set(task_texts(tasks)) if tasks else None, {}, []
        for i, ep in enumerate(reader.episodes):
            task = next((t for t in ep.tasks if texts is None or t in texts), None)
            if task is None or (max_episodes_per_task and taken.get(task, 0) >= max_episodes_per_task):
                continue
            taken[task] = taken.get(task, 0) + 1
            chosen.append(i)
        tables = (conform(reader.read_episode(i), source=str(path)) for i in chosen)
        return cls.from_tables(tables, chunk_len, tasks, max_episodes_per_task)

    # ---- access -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def num_episodes(self) -> int:
        return len(self.bounds)

    def episode_bounds_of(self, row: int) -> tuple[int, int]:
        return self.bounds[int(self._episode_of[row])]

    def episode_success(self, row: int) -> bool:
        return bool(self.success[int(self._episode_of[row])])

    def sample(self, row: int) -> Sample:
        """The model sample of frame `row` (raw units; build_batch normalizes)."""
        return row_to_sample(self.table.slice(int(row), 1).to_pylist()[0])

    def samples(self, rows: Sequence[int]) -> list[Sample]:
        return [self.sample(r) for r in rows]

    def views(self, rows: Sequence[int], cameras: Sequence[str], size: int) -> np.ndarray:
        """uint8 [len(rows), V, size, size, 3]: the frames' camera images in `cameras` order, resized."""
        out = np.zeros((len(rows), len(cameras), size, size, 3), np.uint8)
        names, data = self.table.column(K.IMAGE_VIEWS), self.table.column(K.IMAGES)
        for i, r in enumerate(rows):
            views = names[int(r)].as_py()
            encoded = data[int(r)].as_py()
            for v, cam in enumerate(cameras):
                if cam not in views:
                    raise KeyError(f"expert frame {int(r)} has no camera {cam!r} (has {views})")
                out[i, v] = img.resize(img.decode(encoded[views.index(cam)], f"expert frame {int(r)} {cam}"), size)
        return out

    def states(self, rows: Sequence[int]) -> list[np.ndarray]:
        col = self.table.column(K.STATE)
        return [np.asarray(col[int(r)].as_py(), np.float32) for r in rows]

    def cameras(self, dataset: str) -> tuple[str, ...]:
        rows = np.flatnonzero(self.datasets == dataset)
        if rows.size == 0:
            raise KeyError(f"the expert set has no frames of {dataset!r}")
        return tuple(self.table.column(K.IMAGE_VIEWS)[int(rows[0])].as_py())

    def monte_carlo_returns(self, gamma: float, stride: int) -> np.ndarray:
        """[N] float32 return of every frame: reward = the episode's success (0/1) at its last frame.

        gamma is per policy decision and a decision spans `stride` frames, so the
        per-frame discount is gamma ** (1 / stride) (App. A: "standard state values
        via Monte Carlo returns" on the offline IL set).
        """
        out = np.zeros(len(self), np.float32)
        g = float(gamma) ** (1.0 / stride)
        for (a, b), ok in zip(self.bounds, self.success):
            r = np.zeros(b - a, np.float32)
            r[-1] = float(ok)
            out[a:b] = monte_carlo_returns(r, gamma=g)
        return out

    def decision_rows(self, row: int, stride: int) -> np.ndarray:
        """Frames at which an expert acting in chunks of `stride` decides, from `row` to its episode's end."""
        _, stop = self.episode_bounds_of(row)
        return np.arange(int(row), stop, int(stride))


def clip_encoder(model: str = "debug", checkpoint: str = "", device: str = "cpu", seed: int = 0) -> ClipImageEncoder:
    """The retrieval encoder E: "debug" (tiny random ViT of `seed`) or an open_clip model from a LOCAL checkpoint
    file; "debug" takes one too (what pipelines/train_retriever.py writes)."""
    if model == "debug" and not checkpoint:
        return ClipImageEncoder.from_preset("debug", seed=seed).to(device)
    if not checkpoint:
        raise ValueError(f"CLIP model {model!r} needs a local checkpoint file (RLConfig.clip_checkpoint); "
                         "nothing is downloaded")
    return ClipImageEncoder.from_pretrained(model, checkpoint, device=device)


@dataclasses.dataclass
class Retrieved:
    rows: np.ndarray  # [Q, k] int64 expert rows per query
    scores: np.ndarray  # [Q, k] float32 weighted multi-view cosine similarity, descending

    @property
    def mean_similarity(self) -> float:
        return float(self.scores.mean()) if self.scores.size else float("nan")


class SampleRetriever:
    """One pre-encoded `ExpertIndex` per embodiment over the expert set; top-k (or random) per query."""

    def __init__(self, experts: ExpertSet, encoder: ClipImageEncoder, cfg: RetrievalConfig, seed: int = 0,
                 batch_size: int = 64):
        self.experts, self.encoder, self.cfg = experts, encoder, cfg
        self.batch_size = batch_size
        self._rng = np.random.default_rng(seed)
        self._device = next(encoder.parameters()).device
        self.indexes: dict[str, tuple[ExpertIndex, tuple[str, ...]]] = {}
        size = encoder.image_size[0]
        for dataset in sorted(set(experts.datasets.tolist())):
            cameras = experts.cameras(dataset)
            if len(cameras) != len(cfg.view_weights):
                raise ValueError(f"{dataset!r} has {len(cameras)} cameras {cameras} but RetrievalConfig.view_weights "
                                 f"gives {len(cfg.view_weights)} weights")
            rows = np.flatnonzero(experts.datasets == dataset)
            batches = ((rows[i:i + batch_size], self._pixels(experts.views(rows[i:i + batch_size], cameras, size)))
                       for i in range(0, len(rows), batch_size))
            self.indexes[dataset] = (ExpertIndex.build(encoder, batches, cfg.index_dtype, cameras), cameras)

    def _pixels(self, views: np.ndarray) -> torch.Tensor:
        return images_from_uint8(views).to(self._device)

    def encode(self, samples: Sequence[Sample], cameras: Sequence[str]) -> np.ndarray:
        """[Q, V, D] CLIP embeddings of the samples' camera images (`cameras` order)."""
        size = self.encoder.image_size[0]
        out = []
        for i in range(0, len(samples), self.batch_size):
            part = samples[i:i + self.batch_size]
            views = np.stack([np.stack([img.resize(s.images[c], size) for c in cameras]) for s in part])
            out.append(self.encoder(self._pixels(views)).cpu().numpy())
        return np.concatenate(out)

    def retrieve(self, samples: Sequence[Sample]) -> Retrieved:
        """k expert rows per rollout sample: most similar (§3.3) or random (ablation), per embodiment."""
        k = self.cfg.k
        rows = np.zeros((len(samples), k), np.int64)
        scores = np.zeros((len(samples), k), np.float32)
        by_emb: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            by_emb.setdefault(s.embodiment, []).append(i)
        for emb, idx in by_emb.items():
            if emb not in self.indexes:
                raise KeyError(f"no expert frames of embodiment {emb!r} to retrieve from (have {sorted(self.indexes)})")
            index, cameras = self.indexes[emb]
            query = self.encode([samples[i] for i in idx], cameras)
            s, pos = retrieve(index, query, self.cfg, rng=self._rng)
            rows[idx] = index.sample_ids[pos.cpu().numpy()]
            scores[idx] = s.cpu().numpy()
        return Retrieved(rows, scores)

    def samples(self, rows: Sequence[int]) -> list[Sample]:
        return self.experts.samples(rows)
