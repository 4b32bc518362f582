"""Configuration of the RL stage (§3.3, App. A "Reinforcement Learning"): one frozen dataclass, with presets.

    debug   a short CPU run: 3 RL episodes x 6 rollouts, K = 8 steps of 32 samples, tiny value model and CLIP
    paper   App. A: at most 10 RL episodes per task, at most 20 rollouts each, ~100M value model,
            CLIP ViT-B/32 retrieval with view weights (0.83, 0.083, 0.083); update sizes are ours

The paper fixes: RL episodes <= 10 and rollouts <= 20 per episode (App. A), rollout GAE clipped to
[-0.8, 0.8], expert advantage 1.0, a value model warmed up on Monte-Carlo returns of the imitation
set, and the CLIP view weights. It does not give K, the learning rate, the retrieval k or the PPO
clip; the defaults here are FPO++-style (arXiv 2602.02481) and say so.

Ablation switches (Table 3):
    use_expert_data=False       "w/o Expert Dataset": rollouts only
    retrieval.mode="random"     "w/o Similar Sample": uniformly random expert frames
    advantage.expert_gae=True   "w/ standard Advantage": GAE on the expert frames too
    ablate_decoupling=True      "w/o Intention Decoupling" in the RL losses (the learners switch the
                                loaded policy's model.decoupling.enabled off; that is the one switch)
"""

from __future__ import annotations

import dataclasses

from syvla.cli import Presets, field
from syvla.rl.advantages import AdvantageConfig
from syvla.rl.fpo import FPOConfig
from syvla.rl.retrieval import RetrievalConfig
from syvla.rl.value import ValueConfig, debug_value_config, paper_value_config

MAX_RL_EPISODES = 10  # App. A: "at most 10 RL episodes" per task
MAX_ROLLOUTS = 20  # App. A: "each episode contains at most 20 rollout trajectories"


@dataclasses.dataclass(frozen=True)
class RLConfig:
    # ---- the loop (App. A) ------------------------------------------------------------------------
    rl_episodes: int = field(3, "RL episodes (collect -> update -> publish); App. A: at most 10 per task")
    rollouts_per_episode: int = field(6, "rollout trajectories per RL episode; App. A: at most 20")
    min_rollouts: int = field(1, "proceed after collect_timeout_s with at least this many rewarded rollouts")
    collect_timeout_s: float = field(1800.0, "seconds to wait for rollouts_per_episode rewarded rollouts")
    poll_s: float = field(1.0, "seconds between two reads of the replay buffer while waiting")
    max_staleness: int = field(0, "accept rollouts of policy versions up to this many behind the current one "
                                   "(their l_old uses their own weights); 0 = on-policy only")
    final_eval: bool = field(True, "after the last update, collect one more batch to measure the final version")
    train_on_padding: str = field("checkpoint", "chunk steps the losses fit on expert frames: 'checkpoint' = the "
                                  "rule the policy was fine-tuned with (its train_on_padding; false when it records "
                                  "none), 'true' = every step, the hold-still padding too, 'false' = the demo's own "
                                  "steps (syvla.data.chunking.loss_mask)")
    score_steps: int = field(10, "leading steps of each served chunk the policy loss scores (= actions the robot "
                                  "executes per chunk); 0 = the whole chunk")
    # ---- the policy update (FPO-style PPO, ../shared/notes/rl.md) -----------------------------------
    update_steps: int = field(16, "K: optimizer steps per RL episode (minibatches over the merged batch); 16 with "
                                  "lr 3e-5 and a retriever trained on the imitation set is the recipe docs/rl.md measured")
    minibatch_size: int = field(32, "samples per optimizer step over all learners")
    lr: float = field(3e-5, "AdamW learning rate of the policy (the paper gives none; docs/rl.md records the runs); "
                            "0 with weight_decay 0 = a null update: the published version equals its parent bit for bit")
    weight_decay: float = field(0.0, "AdamW weight decay of the policy")
    grad_clip: float = field(1.0, "global gradient L2-norm clip of the policy")
    fpo: FPOConfig = field(default_factory=FPOConfig, help="FPO-style PPO ratio and clipping (--fpo.*)")
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig, help="GAE, its clip and the expert advantage "
                                                                             "(--advantage.*)")
    ablate_decoupling: bool = field(False, "ablation 'w/o Intention Decoupling': the learners turn the policy's "
                                           "model.decoupling.enabled off (§3.2 is on as the checkpoint says otherwise)")
    keep_versions: int = field(2, "policy versions whose weights the learners keep for l_old (current + older)")
    num_learners: int = field(1, "PPO learner actors; gradients are all-reduced (gloo on CPU, NCCL on GPU)")
    # ---- Similar-Sample Guidance (§3.3) -----------------------------------------------------------
    use_expert_data: bool = field(True, "merge retrieved expert frames into each batch; False = ablation "
                                         "'w/o Expert Dataset'")
    use_rollout_data: bool = field(True, "merge the rollout steps into each batch; False = an expert-only update "
                                          "(the expert term alone, through the same learners: it must do no harm)")
    retrieval: RetrievalConfig = field(default_factory=lambda: RetrievalConfig(k=2),
                                       help="Similar-Sample Guidance retrieval (--retrieval.*)")
    clip_model: str = field("debug", "open_clip model name (e.g. ViT-B-32) or 'debug' (tiny random ViT)")
    clip_checkpoint: str = field("", "local open_clip checkpoint file for clip_model (no downloads)")
    expert_stride: int = field(10, "frames between two policy decisions in the imitation set (= env steps "
                                    "executed per chunk): the time step of its Monte-Carlo returns and GAE")
    max_expert_episodes: int = field(0, "imitation episodes loaded per task (0 = all)")
    # ---- value model (App. A) -------------------------------------------------------------------
    value: ValueConfig = field(default_factory=debug_value_config, help="the value model's sizes (--value.*)")
    value_state: bool = field(True, "the value model also sees the normalized proprioceptive state")
    value_lr: float = field(3e-4, "AdamW learning rate of the value model")
    value_warmup_steps: int = field(200, "warm-up steps on Monte-Carlo returns of the imitation set (App. A)")
    value_steps: int = field(20, "value steps per RL episode on the rollouts' lambda-returns")
    value_batch_size: int = field(32, "samples per value step")
    # ---- placement -------------------------------------------------------------------------------
    device: str = field("cpu", "learner / value / retriever device: cpu or cuda")
    actor_cpus: float = field(0.25, "CPUs Ray reserves per RL actor (fractions share a small machine)")
    learner_gpus: float = field(0.0, "GPUs per PPO learner actor")
    seed: int = field(0, "seeds the (tau, eps) pairs, minibatch order and random retrieval")

    def __post_init__(self):
        if not 1 <= self.rl_episodes <= MAX_RL_EPISODES:
            raise ValueError(f"RLConfig.rl_episodes must be in 1..{MAX_RL_EPISODES} (App. A), got {self.rl_episodes}")
        if not 1 <= self.rollouts_per_episode <= MAX_ROLLOUTS:
            raise ValueError(f"RLConfig.rollouts_per_episode must be in 1..{MAX_ROLLOUTS} (App. A), "
                             f"got {self.rollouts_per_episode}")
        if not 1 <= self.min_rollouts <= self.rollouts_per_episode:
            raise ValueError(f"RLConfig.min_rollouts must be in 1..rollouts_per_episode, got {self.min_rollouts}")
        for name in ("collect_timeout_s", "poll_s", "update_steps", "minibatch_size", "grad_clip",
                     "keep_versions", "num_learners", "expert_stride", "value_lr", "value_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RLConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("lr", "max_staleness", "score_steps", "weight_decay", "max_expert_episodes", "value_warmup_steps",
                     "value_steps", "actor_cpus", "learner_gpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"RLConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not (self.use_expert_data or self.use_rollout_data):
            raise ValueError("RLConfig.use_expert_data and use_rollout_data are both false: the batch would be empty")
        if self.train_on_padding not in ("checkpoint", "true", "false"):
            raise ValueError(f"RLConfig.train_on_padding must be 'checkpoint', 'true' or 'false', got "
                             f"{self.train_on_padding!r}")
        if self.max_staleness >= self.keep_versions:
            raise ValueError(f"RLConfig.max_staleness ({self.max_staleness}) must be < keep_versions "
                             f"({self.keep_versions}): stale rollouts need their behaviour weights")
        if self.minibatch_size < self.num_learners:
            raise ValueError(f"RLConfig.minibatch_size ({self.minibatch_size}) must be >= num_learners "
                             f"({self.num_learners})")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"RLConfig.device must be cpu or cuda[:i], got {self.device!r}")

    def expert_train_on_padding(self, checkpoint) -> bool:
        """train_on_padding resolved against the checkpoint RL starts from."""
        if self.train_on_padding != "checkpoint":
            return self.train_on_padding == "true"
        from syvla.model.checkpoint import read_train_on_padding

        return bool(read_train_on_padding(checkpoint))

    @property
    def ablation(self) -> str:
        """The Table 3 row this configuration runs ("all" when no switch is set)."""
        off = []
        if not self.use_expert_data:
            off.append("w/o Expert Dataset")
        elif self.retrieval.mode == "random":
            off.append("w/o Similar Sample")
        if self.use_expert_data and self.advantage.expert_gae:
            off.append("w/ standard Advantage")
        if self.ablate_decoupling:
            off.append("w/o Intention Decoupling")
        if not self.use_rollout_data:
            off.append("expert frames only")
        return ", ".join(off) or "all"


def debug_rl_config(**overrides) -> RLConfig:
    """A short CPU run: 3 episodes x 6 rollouts, K = 16 steps of 32 samples at lr 3e-5, tiny value model and CLIP
    (untrained unless clip_checkpoint names one `pipelines/train_retriever.py` wrote: docs/rl.md)."""
    return dataclasses.replace(RLConfig(), **overrides)


def paper_rl_config(**overrides) -> RLConfig:
    """App. A sizes: 10 RL episodes x 20 rollouts, ~100M value model, CLIP ViT-B/32 (local checkpoint).

    K, minibatch, learning rates and k are ours (the paper gives none). Set clip_checkpoint to a local
    open_clip ViT-B-32 file (the retriever refuses to start without it; nothing is downloaded).
    """
    cfg = dict(
        rl_episodes=MAX_RL_EPISODES, rollouts_per_episode=MAX_ROLLOUTS, min_rollouts=10,
        update_steps=32, minibatch_size=64, lr=1e-5, keep_versions=2, num_learners=7,  # App. A: 7 worker GPUs
        retrieval=RetrievalConfig(k=4), clip_model="ViT-B-32",
        value=paper_value_config(), value_lr=1e-4, value_warmup_steps=5000, value_steps=200, value_batch_size=64,
        device="cuda", actor_cpus=4.0, learner_gpus=1.0,
    )
    cfg.update(overrides)
    return RLConfig(**cfg)


RL_PRESETS = Presets("RL", {"debug": debug_rl_config, "paper": paper_rl_config})


def rl_preset(name: str, **overrides) -> RLConfig:
    return RL_PRESETS.build(name, **overrides)
