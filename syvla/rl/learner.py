"""The PPO learner (§3.3 "adapt PPO", App. A): K optimizer steps of the FPO-style clipped objective on a
merged batch, gradients all-reduced across learners.

Per update (../shared/notes/rl.md):
  1. l_old[b, i]: CFM loss of sample b on its stored pair (tau_i, eps_i) under the
     weights of the version that produced it (rollouts) or the weights the update
     starts from (expert frames), no grad. Weights of older versions are kept
     (`keep_versions`), so a stale rollout is scored by its own policy.
  2. K times: a minibatch; l_new with grad under the current weights; fpo_loss;
     backward; all-reduce the gradients (gloo on CPU, NCCL on GPU); clip; AdamW.

Intention Decoupling (§3.2, "applied throughout the entire model training process"):
the CFM losses are computed on the masked Feature Query States. The keep-mask is
found once per sample with the behaviour weights (pass 1: gradient of the sample
group's mean CFM loss w.r.t. H, states below the tau-quantile of the L2 norms
zeroed) and stored with the (tau, eps) pairs, so l_old and l_new are the same
function of the weights and the ratio is exactly 1 before the first step. Both are
`SyVLA.per_sample_flow_losses`. Whether decoupling is on is the policy's model config
(`decoupling.enabled`); `RLConfig.ablate_decoupling` turns it off for the ablation
"w/o Intention Decoupling".

The model runs in eval mode (no dropout) for the same reason. No Ray here:
`syvla.rl.actors.PPOLearner` wraps `PolicyLearner`; the process group is plain
torch.distributed, initialized over TCP by `init_process_group`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from syvla.model.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from syvla.runstate import atomic_torch_save
from syvla.model.processing import Batch, build_batch
from syvla.rl.batch import PolicyBatch
from syvla.rl.config import RLConfig
from syvla.rl.fpo import fpo_loss

_BUCKET_ELEMS = 1 << 23  # ~32 MB of fp32 gradients per all-reduce call


class PolicyLearner:
    """One learner: a full policy copy, its optimizer, and the behaviour weights of recent versions."""

    def __init__(self, ckpt_dir: str | Path, cfg: RLConfig, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.cfg, self.rank, self.world = cfg, rank, world_size
        self.device = torch.device(cfg.device)
        self.model, self.norm_stats, self.version = load_checkpoint(ckpt_dir, self.device)
        self._train_meta = read_metadata(ckpt_dir).get("train")  # carried into every RL version
        self.model.eval()  # no dropout: l_old and l_new must be the same function of the weights
        if cfg.ablate_decoupling:  # Table 3 "w/o Intention Decoupling": the one switch is the model's
            mcfg = self.model.cfg
            self.model.cfg = dataclasses.replace(mcfg, decoupling=dataclasses.replace(mcfg.decoupling, enabled=False))
        self.versions: dict[int, str] = {self.version: str(Path(ckpt_dir).resolve())}
        self._behaviour: OrderedDict[int, torch.nn.Module] = OrderedDict()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._rng = np.random.default_rng(cfg.seed + 1000 * rank)
        self.group_ready = world_size == 1

    # ---- process group ----------------------------------------------------------------------------
    def init_process_group(self, address: str, port: int, timeout_s: float = 300.0) -> None:
        """Join the learners' torch.distributed group over TCP (rank 0's node address and a free port)."""
        if self.world == 1:
            return
        import datetime

        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=self.rank,
                                world_size=self.world, timeout=datetime.timedelta(seconds=timeout_s))
        for p in self.model.parameters():  # identical starting weights on every rank, whatever happened before
            dist.broadcast(p.data, 0)
        self.group_ready = True

    # ---- versions -----------------------------------------------------------------------------------
    def add_version(self, version: int, ckpt_dir: str | Path) -> None:
        """Remember where `version`'s weights are (for l_old of its rollouts); keep the newest keep_versions."""
        self.versions[int(version)] = str(Path(ckpt_dir).resolve())
        for old in sorted(self.versions)[:-self.cfg.keep_versions]:
            del self.versions[old]
            self._behaviour.pop(old, None)

    def load(self, ckpt_dir: str | Path) -> int:
        """Continue from a saved policy (resume): weights and version. The optimizer restarts empty;
        `load_optimizer` restores its state (saved with `save_optimizer` after every update)."""
        model, _, version = load_checkpoint(ckpt_dir, self.device)
        self.model.load_state_dict(model.state_dict())
        self.opt = torch.optim.AdamW(self.params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.version = version
        self.add_version(version, ckpt_dir)
        return version

    def save_optimizer(self, path: str | Path, version: int) -> str:
        """Write the AdamW state reached at `version` (one file, replaced atomically: the newest only)."""
        atomic_torch_save({"version": int(version), "optimizer": self.opt.state_dict()}, path)
        return str(path)

    def load_optimizer(self, path: str | Path, version: int) -> bool:
        """Restore the AdamW state saved at `version`; False (state left empty) when the file holds another."""
        saved = torch.load(path, map_location=self.device, weights_only=True)
        if int(saved["version"]) != int(version):
            return False
        self.opt.load_state_dict(saved["optimizer"])
        for group in self.opt.param_groups:  # this run's settings, not the saved ones
            group["lr"], group["weight_decay"] = self.cfg.lr, self.cfg.weight_decay
        return True

    def _behaviour_model(self, version: int):
        if version == self.version:
            return self.model
        if version not in self.versions:
            raise KeyError(f"no weights of policy version {version} to compute l_old with (kept: "
                           f"{sorted(self.versions)}); raise keep_versions or lower max_staleness")
        if version not in self._behaviour:
            self._behaviour[version] = load_checkpoint(self.versions[version], self.device)[0].eval()
            while len(self._behaviour) > max(1, self.cfg.keep_versions - 1):
                self._behaviour.popitem(last=False)
        return self._behaviour[version]

    # ---- losses -------------------------------------------------------------------------------------
    def _model_batch(self, batch: PolicyBatch) -> Batch:
        return build_batch(batch.samples, self.model.processor, self.model.cfg, self.norm_stats,
                           training=True).to(self.device)

    @property
    def decoupling(self) -> bool:
        """Intention Decoupling in the RL losses: the policy's model config says (tau > 0 to mask anything)."""
        dc = self.model.cfg.decoupling
        return dc.enabled and dc.tau > 0

    @torch.no_grad()
    def behaviour_losses(self, batch: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """l_old [B, N] under each row's behaviour weights, and the stored decoupling keep-mask [B, n]."""
        b, n_q = len(batch), self.model.cfg.num_query_tokens
        l_old = torch.zeros(b, self.cfg.fpo.n_mc)
        keep = torch.ones(b, n_q, dtype=torch.bool) if self.decoupling else None
        chunk = max(1, math.ceil(self.cfg.minibatch_size / self.world))
        for version in np.unique(batch.behaviour_version):
            rows = np.flatnonzero(batch.behaviour_version == version)
            model = self._behaviour_model(int(version))
            for i in range(0, len(rows), chunk):
                part = batch.select(rows[i:i + chunk])
                # the mask is found with the behaviour weights, on the current policy's decoupling setting
                l, k = model.per_sample_flow_losses(self._model_batch(part), part.tau.to(self.device),
                                                    part.eps.to(self.device), decoupling=self.decoupling)
                idx = torch.from_numpy(rows[i:i + chunk])
                l_old[idx] = l.float().cpu()
                if keep is not None:
                    keep[idx] = k.cpu()
        return l_old, keep

    # ---- the update ---------------------------------------------------------------------------------
    def schedule(self, n_rows: int) -> list[np.ndarray]:
        """The local rows of each of the K steps: passes over a fresh permutation of this learner's shard."""
        local_mb = max(1, math.ceil(self.cfg.minibatch_size / self.world))
        order, out = np.zeros(0, np.int64), []
        for _ in range(self.cfg.update_steps):
            while n_rows and len(order) < local_mb:
                order = np.concatenate([order, self._rng.permutation(n_rows)])
            out.append(order[:local_mb])
            order = order[local_mb:]
        return out

    def update(self, batch: PolicyBatch) -> dict:
        """K optimizer steps on this learner's shard of the merged batch (the caller shards)."""
        if not self.group_ready:
            raise RuntimeError("init_process_group must run on every learner before update")
        cfg = self.cfg
        plan = self.schedule(len(batch))
        used = np.unique(np.concatenate(plan)) if len(batch) else np.zeros(0, np.int64)
        # l_old only for the rows the K steps will touch, under each row's behaviour weights
        l_old, keep = self.behaviour_losses(batch.select(used)) if len(used) else (None, None)
        where = np.full(len(batch), -1, np.int64)
        where[used] = np.arange(len(used))
        acc = {"loss": 0.0, "clip": 0.0, "pairs": 0, "rmin": math.inf, "rmax": -math.inf, "gnorm": 0.0,
               "first_rmin": math.inf, "first_rmax": -math.inf, "l_new_expert": 0.0, "l_new_rollout": 0.0,
               "n_expert": 0, "n_rollout": 0}
        for step, rows in enumerate(plan):
            self.opt.zero_grad(set_to_none=False)
            n_local = len(rows)
            if n_local:
                mb = batch.select(rows)
                idx = torch.from_numpy(where[rows])
                l_new, _ = self.model.per_sample_flow_losses(self._model_batch(mb), mb.tau.to(self.device),
                                                             mb.eps.to(self.device),
                                                             keep=None if keep is None else keep[idx],
                                                             decoupling=self.decoupling)
                adv = torch.from_numpy(mb.advantages).to(self.device)
                loss, stats = fpo_loss(l_new, l_old[idx].to(self.device), adv, cfg.fpo.clip_eps,
                                       cfg.fpo.log_ratio_clip)
                (loss * n_local).backward()  # summed over learners, divided by the global count below
                pairs = l_new.numel()
                acc["loss"] += loss.item() * n_local
                acc["clip"] += stats["clip_fraction"].item() * pairs
                acc["pairs"] += pairs
                acc["rmin"] = min(acc["rmin"], stats["ratio_min"].item())
                acc["rmax"] = max(acc["rmax"], stats["ratio_max"].item())
                if step == 0:
                    acc["first_rmin"], acc["first_rmax"] = stats["ratio_min"].item(), stats["ratio_max"].item()
                per = l_new.detach().mean(1).cpu().numpy()
                ex = mb.is_expert
                acc["l_new_expert"] += float(per[ex].sum())
                acc["l_new_rollout"] += float(per[~ex].sum())
                acc["n_expert"] += int(ex.sum())
                acc["n_rollout"] += int((~ex).sum())
            if self._allreduce_grads(n_local) == 0:
                continue
            acc["gnorm"] += float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip))
            self.opt.step()
        return self._reduce_stats(acc, cfg.update_steps)

    def _allreduce_grads(self, n_local: int) -> float:
        """Average the gradients over all learners' rows: sum(grad_r * n_r) / sum(n_r). Returns sum(n_r)."""
        grads = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        if self.world == 1:
            if n_local:
                for g in grads:
                    g.div_(n_local)
            return float(n_local)
        count = torch.tensor([float(n_local)], device=self.device)
        dist.all_reduce(count)
        total = float(count.item())
        bucket: list[torch.Tensor] = []
        size = 0
        for g in grads + [None]:
            if g is not None:
                bucket.append(g)
                size += g.numel()
            if bucket and (g is None or size >= _BUCKET_ELEMS):
                flat = torch._utils._flatten_dense_tensors(bucket)
                dist.all_reduce(flat)
                if total:
                    flat.div_(total)
                for dst, src in zip(bucket, torch._utils._unflatten_dense_tensors(flat, bucket)):
                    dst.copy_(src)
                bucket, size = [], 0
        return total

    def _reduce_stats(self, acc: dict, steps: int) -> dict:
        sums = torch.tensor([acc["loss"], acc["clip"], acc["pairs"], acc["l_new_expert"], acc["l_new_rollout"],
                             acc["n_expert"], acc["n_rollout"]], dtype=torch.float64)
        mins = torch.tensor([acc["rmin"], acc["first_rmin"]], dtype=torch.float64)
        maxs = torch.tensor([acc["rmax"], acc["first_rmax"]], dtype=torch.float64)
        if self.world > 1:
            dev = self.device
            sums, mins, maxs = sums.to(dev), mins.to(dev), maxs.to(dev)
            dist.all_reduce(sums)
            dist.all_reduce(mins, op=dist.ReduceOp.MIN)
            dist.all_reduce(maxs, op=dist.ReduceOp.MAX)
            sums, mins, maxs = sums.cpu(), mins.cpu(), maxs.cpu()
        loss, clip, pairs, l_ex, l_ro, n_ex, n_ro = sums.tolist()
        rows = n_ex + n_ro
        nan = float("nan")
        return {
            "policy_loss": loss / rows if rows else nan,
            "clip_fraction": clip / pairs if pairs else nan,
            "ratio_min": mins[0].item(), "ratio_max": maxs[0].item(),
            "ratio_min_first_step": mins[1].item(), "ratio_max_first_step": maxs[1].item(),
            "cfm_loss_expert": l_ex / n_ex if n_ex else nan,
            "cfm_loss_rollout": l_ro / n_ro if n_ro else nan,
            "grad_norm": acc["gnorm"] / steps,
            "update_steps": steps,
        }

    # ---- publishing ---------------------------------------------------------------------------------
    def save(self, path: str | Path, version: int) -> str:
        """Write the current weights as checkpoint `version` (the caller makes one learner do it)."""
        extra = {"rl": {"parent_version": self.version, "ablation": self.cfg.ablation}}
        if self._train_meta is not None:  # how the imitation policy was trained (its train_on_padding, ...)
            extra["train"] = self._train_meta
        out = save_checkpoint(path, self.model, self.norm_stats, int(version), extra=extra)
        return str(out)

    def set_version(self, version: int, ckpt_dir: str | Path) -> None:
        """The current weights are now `version` (saved at ckpt_dir by one learner)."""
        self.version = int(version)
        self.add_version(version, ckpt_dir)

    def weights_checksum(self) -> float:
        """Sum of |w| over all weights: learners that stay in sync agree on it to the last bit."""
        with torch.no_grad():
            return float(sum(p.detach().double().abs().sum().item() for p in self.model.parameters()))


class LearnerGroup:
    """N learners driven as one: each gets a shard of the batch, they step together, one of them saves.

    `learners` are PolicyLearner objects, or Ray actor handles with `run_all`
    resolving calls remotely (syvla.rl.actors); run_all takes [(method, args)]
    and returns the results in order. The default calls them in this process.
    """

    def __init__(self, learners: list, run_all=None):
        if not learners:
            raise ValueError("LearnerGroup needs at least one learner")
        self.learners = list(learners)
        self._run_all = run_all or (lambda calls: [fn(*args) for fn, args in calls])

    def _all(self, name: str, args_per: list[tuple]) -> list:
        return self._run_all([(getattr(learner, name), args) for learner, args in zip(self.learners, args_per)])

    def __len__(self) -> int:
        return len(self.learners)

    def update(self, batch: PolicyBatch) -> dict:
        """K steps on `batch` sharded over the learners; statistics are already reduced over all of them."""
        n = len(self.learners)
        stats = self._all("update", [(batch.shard(r, n),) for r in range(n)])
        return {**stats[0], "learners": n}

    def save(self, path: str, version: int) -> str:
        """Learner 0 writes checkpoint `version` (all hold the same weights); every learner records it."""
        (out,) = self._run_all([(getattr(self.learners[0], "save"), (path, version))])
        self._all("set_version", [(version, out)] * len(self.learners))
        return out

    def load(self, ckpt_dir: str) -> int:
        return self._all("load", [(ckpt_dir,)] * len(self.learners))[0]

    def save_optimizer(self, path: str, version: int) -> str:
        """Learner 0 writes the optimizer state (every learner holds the same: same all-reduced gradients)."""
        (out,) = self._run_all([(getattr(self.learners[0], "save_optimizer"), (path, version))])
        return out

    def load_optimizer(self, path: str, version: int) -> bool:
        return all(self._all("load_optimizer", [(path, version)] * len(self.learners)))

    def checksums(self) -> list[float]:
        return self._all("weights_checksum", [()] * len(self.learners))
