"""The value model's life in RL (App. A): warm-up on Monte-Carlo returns of the imitation set, V(s) for
GAE on rollouts, then regression on the rollouts' lambda-returns after every RL episode.

    trainer = ValueTrainer(cfg, policy_cfg, norm_stats, experts)
    trainer.warmup()                               # App. A: MC returns of the IL set, before RL
    v = trainer.values(steps.samples)              # [M] V(s_t) for GAE
    trainer.fit(steps.samples, returns)            # Huber on lambda-returns
    trainer.expert_gae(rows)                       # ablation "w/ standard Advantage" (Table 3)

The model and its loss live in `syvla.rl.value`; this module feeds them. No Ray
here (`syvla.rl.actors.ValueLearner` wraps it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from syvla import constants as K
from syvla.data import images as img
from syvla.model.config import SyVLAConfig
from syvla.model.sample import Sample
from syvla.normalize import NormStats
from syvla.rl.advantages import trajectory_advantages
from syvla.rl.config import RLConfig
from syvla.rl.guidance import ExpertSet
from syvla.rl.value import RETURNS, ValueModel, value_loss, warmup_value


@dataclasses.dataclass
class ValueInputs:
    images: np.ndarray  # uint8 [B, V, S, S, 3], views in embodiment camera order, zero past its cameras
    state: np.ndarray  # float32 [B, max_state_dim], normalized, zero-padded

    def batch(self, rows, device, with_state: bool) -> dict:
        x = torch.from_numpy(self.images[rows]).permute(0, 1, 4, 2, 3).float().div_(255.0)
        out = {K.IMAGES: x.to(device)}
        if with_state:
            out[K.STATE] = torch.from_numpy(self.state[rows]).to(device)
        return out

    def __len__(self) -> int:
        return int(self.images.shape[0])


class ValueTrainer:
    def __init__(self, cfg: RLConfig, policy_cfg: SyVLAConfig, norm_stats: NormStats,
                 experts: ExpertSet | None = None):
        self.cfg, self.policy_cfg, self.norm_stats, self.experts = cfg, policy_cfg, norm_stats, experts
        vcfg = cfg.value
        if cfg.value_state:
            vcfg = dataclasses.replace(vcfg, state_dim=policy_cfg.max_state_dim)
        if vcfg.num_views < policy_cfg.max_cameras:
            raise ValueError(f"RLConfig.value.num_views ({vcfg.num_views}) < the policy's cameras "
                             f"({policy_cfg.max_cameras})")
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.model = ValueModel.build(vcfg).to(self.device).eval()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.value_lr)
        self._rng = np.random.default_rng(cfg.seed)
        self._expert_inputs: ValueInputs | None = None

    # ---- inputs -------------------------------------------------------------------------------------
    def _empty(self, n: int) -> ValueInputs:
        s = self.model.cfg.vision.image_size
        return ValueInputs(np.zeros((n, self.model.cfg.num_views, s, s, 3), np.uint8),
                           np.zeros((n, self.policy_cfg.max_state_dim), np.float32))

    def _put_state(self, out: ValueInputs, i: int, embodiment: str, state) -> None:
        emb = self.policy_cfg.embodiment(embodiment)
        st = self.norm_stats[emb.name].state.normalize(np.asarray(state, np.float32))
        out.state[i, :emb.state_dim] = st

    def inputs(self, samples: Sequence[Sample]) -> ValueInputs:
        """Value-model inputs of model samples (rollout steps or expert frames)."""
        out, size = self._empty(len(samples)), self.model.cfg.vision.image_size
        for i, s in enumerate(samples):
            emb = self.policy_cfg.embodiment(s.embodiment)
            for v, cam in enumerate(emb.cameras):
                out.images[i, v] = img.resize(s.images[cam], size)
            self._put_state(out, i, emb.name, s.state)
        return out

    def expert_inputs(self) -> ValueInputs:
        """Every expert frame, decoded once (warm-up and the expert-GAE ablation reuse them)."""
        if self._expert_inputs is None:
            if self.experts is None:
                raise ValueError("ValueTrainer has no expert set")
            ex, size = self.experts, self.model.cfg.vision.image_size
            out = self._empty(len(ex))
            for dataset in sorted(set(ex.datasets.tolist())):
                emb = self.policy_cfg.embodiment(dataset)
                rows = np.flatnonzero(ex.datasets == dataset)
                out.images[rows, :len(emb.cameras)] = ex.views(rows, emb.cameras, size)
                for i, st in zip(rows, ex.states(rows)):
                    self._put_state(out, i, emb.name, st)
            self._expert_inputs = out
        return self._expert_inputs

    # ---- V(s) -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, inputs: ValueInputs, rows=None, batch_size: int = 256) -> np.ndarray:
        rows = np.arange(len(inputs)) if rows is None else np.asarray(rows)
        self.model.eval()
        out = []
        for i in range(0, len(rows), batch_size):
            b = inputs.batch(rows[i:i + batch_size], self.device, self.cfg.value_state)
            out.append(self.model(b[K.IMAGES], b.get(K.STATE)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def values(self, samples: Sequence[Sample]) -> np.ndarray:
        """[M] float32 V(s) of each sample."""
        return self._predict(self.inputs(samples))

    def _batches(self, inputs: ValueInputs, targets: np.ndarray, steps: int):
        n = len(inputs)
        for _ in range(steps):
            rows = self._rng.choice(n, size=min(n, self.cfg.value_batch_size), replace=False)
            b = inputs.batch(rows, self.device, self.cfg.value_state)
            b[RETURNS] = torch.from_numpy(targets[rows]).to(self.device)
            yield b

    def warmup(self) -> dict:
        """App. A: fit V to Monte-Carlo returns of the imitation set before RL starts."""
        inputs = self.expert_inputs()
        targets = self.experts.monte_carlo_returns(self.cfg.advantage.gamma, self.cfg.expert_stride)
        hist = warmup_value(self.model, self._batches(inputs, targets, self.cfg.value_warmup_steps),
                            optimizer=self.opt, device=self.device)
        mse = float(np.mean((self._predict(inputs) - targets) ** 2))
        return {"value_warmup_steps": len(hist), "value_warmup_loss_first": hist[0] if hist else float("nan"),
                "value_warmup_loss_last": float(np.mean(hist[-10:])) if hist else float("nan"),
                "value_warmup_mse": mse, "expert_frames": len(inputs)}

    def fit(self, samples: Sequence[Sample], targets) -> dict:
        """Huber regression on the rollouts' lambda-returns (value_steps steps)."""
        targets = np.asarray(targets, np.float32)
        inputs = self.inputs(samples)
        before = float(np.mean((self._predict(inputs) - targets) ** 2))
        hist = warmup_value(self.model, self._batches(inputs, targets, self.cfg.value_steps), optimizer=self.opt,
                            device=self.device)
        return {"value_loss": float(np.mean(hist)) if hist else float("nan"), "value_mse_before": before,
                "value_mse_after": float(np.mean((self._predict(inputs) - targets) ** 2))}

    def expert_gae(self, rows: Sequence[int]) -> np.ndarray:
        """Ablation "w/ standard Advantage" (Table 3): the clipped GAE of each expert frame.

        Frame r is the first decision of the expert acting from r in chunks of
        `expert_stride` frames to its episode's end, where the reward is the
        episode's success; the frame's advantage is the GAE of that decision.
        """
        rows = np.asarray(rows, np.int64)
        ex, stride = self.experts, self.cfg.expert_stride
        paths = {int(r): ex.decision_rows(int(r), stride) for r in np.unique(rows)}
        frames = np.unique(np.concatenate(list(paths.values())))
        v = dict(zip(frames.tolist(), self._predict(self.expert_inputs(), frames).tolist()))
        adv = {}
        for r, path in paths.items():
            rewards = np.zeros(len(path), np.float32)
            rewards[-1] = float(ex.episode_success(r))
            a, _ = trajectory_advantages(rewards, [v[int(f)] for f in path], self.cfg.advantage)
            adv[r] = float(a[0])
        return np.array([adv[int(r)] for r in rows], np.float32)

    # ---- persistence (resume) -----------------------------------------------------------------------
    def save(self, path: str | Path) -> str:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}, str(tmp))
        tmp.replace(path)
        return str(path)

    def load(self, path: str | Path) -> None:
        self.model.load_state_dict(load_file(str(path), device=str(self.device)))
