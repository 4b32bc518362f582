"""Policy: the inference core (no Ray) that serving, evaluation and RL rollouts wrap.

An observation is a `syvla.model.sample.Observation` or its wire-shaped dict:
    {"embodiment": str, "images": {camera: uint8 [H, W, 3]}, "state": float32 [state_dim],
     "instruction": str, "think": bool (optional), "seed": int | None (optional), "cot": str (optional)}
`infer` returns {"actions": float32 [chunk, action_dim] in the robot's own units,
"policy_version": int, "cot": str | None}.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from syvla.model.checkpoint import load_checkpoint, save_checkpoint
from syvla.model.config import EmbodimentConfig, SyVLAConfig, debug_config
from syvla.model.processing import build_batch
from syvla.model.sample import Observation, ObservationError
from syvla.normalize import DatasetStats, FeatureStats, NormStats


@dataclasses.dataclass(frozen=True)
class _Loaded:
    model: torch.nn.Module
    norm_stats: NormStats
    version: int


class Policy:
    def __init__(self, model, norm_stats: NormStats, policy_version: int = 0, device: str = "cpu"):
        self.device = torch.device(device)
        self._loaded = _Loaded(model.to(self.device).eval(), norm_stats, int(policy_version))

    @classmethod
    def load(cls, ckpt_dir: str | Path, device: str = "cpu") -> "Policy":
        model, stats, version = load_checkpoint(ckpt_dir, device)
        return cls(model, stats, version, device)

    # ---- state ------------------------------------------------------------------
    @property
    def policy_version(self) -> int:
        return self._loaded.version

    @property
    def config(self) -> SyVLAConfig:
        return self._loaded.model.cfg

    def metadata(self) -> dict:
        cfg = self.config
        return {
            "embodiments": {e.name: {"state_dim": e.state_dim, "action_dim": e.action_dim, "cameras": list(e.cameras)}
                            for e in cfg.embodiments},
            "chunk_len": cfg.expert.chunk_len,
            "policy_version": self.policy_version,
            "model": {"vlm": cfg.vlm.source, "num_query_tokens": cfg.num_query_tokens,
                      "flow_steps": cfg.flow.num_steps},
        }

    # ---- inference ----------------------------------------------------------------
    def validate(self, obs: Observation | Mapping) -> Observation:
        """Check an observation (an `Observation` or its wire-shaped dict) against the model; return it
        with only the embodiment's cameras (`.to_sample()` gives the model sample). Raises ObservationError."""
        obs = Observation.from_dict(obs)
        try:
            emb = self.config.embodiment(obs.embodiment)
        except KeyError as e:
            raise ObservationError(f"embodiment: {e.args[0]}") from None
        for cam in emb.cameras:
            if cam not in obs.images:
                raise ObservationError(f"images.{cam}: missing camera for embodiment {emb.name!r}")
            img = np.asarray(obs.images[cam])
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 1:
                raise ObservationError(f"images.{cam}: expected uint8 [H, W, 3], got {img.dtype} {list(img.shape)}")
        if obs.state.shape != (emb.state_dim,):
            raise ObservationError(f"state: expected shape [{emb.state_dim}], got {list(obs.state.shape)}")
        if obs.prefix_actions is not None:
            chunk = self.config.expert.chunk_len
            if obs.prefix_actions.shape[1] != emb.action_dim or len(obs.prefix_actions) > chunk:
                raise ObservationError(f"prefix_actions: expected [<= {chunk}, {emb.action_dim}], got "
                                       f"{list(obs.prefix_actions.shape)}")
        return dataclasses.replace(obs, embodiment=emb.name, images={c: obs.images[c] for c in emb.cameras})

    def infer(self, obs: Observation | Mapping) -> dict:
        return self.infer_batch([obs])[0]

    @torch.no_grad()
    def infer_batch(self, observations: list[Observation | Mapping],
                    states: Sequence[torch.Tensor | None] | None = None) -> list[dict]:
        """One forward for many robots; each result carries the version that produced it.

        `states`: per observation, Feature Query States [n, d] an earlier call of the same episode returned
        (its result's "states") to reuse instead of running the VLM (§3.1's asynchronous VLM and expert), or
        None. With `states` given, every result carries the "states" it used (to reuse later)."""
        observations = [self.validate(o) for o in observations]
        if states is None:
            return self._infer_group(observations, None)
        if len(states) != len(observations):
            raise ValueError(f"infer_batch: {len(states)} states for {len(observations)} observations")
        out: list[dict | None] = [None] * len(observations)
        for reuse in (False, True):
            idx = [i for i, s in enumerate(states) if (s is not None) == reuse]
            if idx:
                group = self._infer_group([observations[i] for i in idx],
                                          torch.stack([states[i] for i in idx]) if reuse else None, keep_states=True)
                for i, r in zip(idx, group):
                    out[i] = r
        return out

    def _infer_group(self, observations: list[Observation], states: torch.Tensor | None,
                     keep_states: bool = False) -> list[dict]:
        loaded = self._loaded  # one consistent (weights, stats, version) for the whole batch
        model, cfg = loaded.model, loaded.model.cfg
        samples = [o.to_sample() for o in observations]
        cots = None
        thinking = [o.think and states is None for o in observations]  # reused states keep their CoT
        if any(thinking):
            batch = build_batch(samples, model.processor, cfg, loaded.norm_stats, training=False)
            generated = model.generate_cot(batch.to(self.device))
            cots = [c if t else o.cot for c, t, o in zip(generated, thinking, observations)]
        batch = build_batch(samples, model.processor, cfg, loaded.norm_stats, training=False, cots=cots,
                            vlm=states is None).to(self.device)
        noise = torch.stack([self._noise(o.seed, cfg) for o in observations])
        guidance = self._guidance(observations, cfg, loaded.norm_stats)
        actions, used = model.sample_actions_and_states(
            batch, noise=noise, guidance=guidance, states=None if states is None else states.to(self.device))
        actions = actions.float().cpu().numpy()
        out = []
        for i, s in enumerate(samples):
            emb = cfg.embodiment(s.embodiment)
            a = loaded.norm_stats[emb.name].action.unnormalize(actions[i, :, : emb.action_dim])
            r = {"actions": a, "policy_version": loaded.version, "cot": cots[i] if thinking[i] else None}
            if keep_states:
                r["states"] = used[i].detach()
            out.append(r)
        return out

    @torch.no_grad()
    def answer(self, images: Sequence[np.ndarray], questions: Sequence[str], max_new_tokens: int = 16) -> list[str]:
        """Visual question answering with the policy's VLM: one uint8 [H, W, 3] image and one question per
        sample, greedy answers (the assistant turn up to <|im_end|>). The VLM's vision-language ability is
        what multimodal co-training keeps (paper Table 2)."""
        from syvla.model.processing import answer_prompt, resize

        if len(images) != len(questions) or not questions:
            raise ValueError(f"answer needs one image per question, got {len(images)} images and "
                             f"{len(questions)} questions")
        model, cfg = self._loaded.model, self.config
        pics = []
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
                raise ValueError(f"image {i}: expected uint8 [H, W, 3], got {img.dtype} {list(img.shape)}")
            pics.append(resize(img, cfg.vlm.image_size))
        enc = model.processor(text=[answer_prompt(q) for q in questions], images=pics, padding=True,
                              return_tensors="pt")
        inputs = {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                                                       "mm_token_type_ids") if k in enc}
        return model.generate_text(inputs, max_new_tokens)

    @staticmethod
    def _guidance(observations: list[Observation], cfg: SyVLAConfig, stats: NormStats):
        """(Y, W) [B, T, max_action_dim] for real-time chunking, or None when no observation has a prefix:
        Y the committed prefix in normalized units, W `flow.rtc_weights` on the embodiment's dims."""
        if all(o.prefix_actions is None for o in observations):
            return None
        from syvla.model.flow import rtc_weights

        shape = (len(observations), cfg.expert.chunk_len, cfg.max_action_dim)
        target, weights = torch.zeros(shape), torch.zeros(shape)
        for i, o in enumerate(observations):
            if o.prefix_actions is None:
                continue
            emb = cfg.embodiment(o.embodiment)
            n = len(o.prefix_actions)
            target[i, :n, : emb.action_dim] = torch.from_numpy(stats[emb.name].action.normalize(o.prefix_actions))
            weights[i, :, : emb.action_dim] = rtc_weights(shape[1], n, o.prefix_delay).unsqueeze(-1)
        return target, weights

    @staticmethod
    def _noise(seed: int | None, cfg: SyVLAConfig) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn(cfg.expert.chunk_len, cfg.max_action_dim, generator=gen)


def unit_norm_stats(cfg: SyVLAConfig) -> NormStats:
    """Identity statistics (mean 0, std 1, q01 -1, q99 1) for every embodiment.

    Only for checkpoints of untrained models (smoke tests, serving benchmarks);
    trained checkpoints carry the statistics the data pipeline computed.
    """
    def unit(dim):
        return FeatureStats(np.zeros(dim), np.ones(dim), -np.ones(dim), np.ones(dim), count=0)

    return NormStats({e.name: DatasetStats(unit(e.state_dim), unit(e.action_dim)) for e in cfg.embodiments})


def make_debug_checkpoint(path: str | Path, seed: int = 0, policy_version: int = 0,
                          cfg: SyVLAConfig | None = None, embodiments: Sequence[EmbodimentConfig] = ()) -> Path:
    """Write an untrained checkpoint with unit statistics (for tests and benchmarks): model `cfg`,
    or the debug preset for `embodiments`."""
    from syvla.model.syvla import SyVLA

    torch.manual_seed(seed)
    cfg = cfg or debug_config(embodiments=tuple(embodiments))
    model = SyVLA(cfg)
    return save_checkpoint(path, model, unit_norm_stats(cfg), policy_version)
