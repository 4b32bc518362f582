"""SyVLA (§3.1): VLM + Feature Query Tokens + Adapter + flow-matching Action Expert."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from syvla.model import flow
from syvla.model.action_expert import ActionExpert
from syvla.model.adapter import Adapter
from syvla.model.config import SyVLAConfig
from syvla.model.decoupling import decoupled_states
from syvla.model.processing import IGNORE, Batch
from syvla.model.query_tokens import FeatureQueryTokens
from syvla.model.vlm import IM_END, build_vlm


@dataclasses.dataclass
class StepOutput:
    loss: torch.Tensor  # scalar to optimize
    action_loss: torch.Tensor  # flow-matching loss (after decoupling when on)
    lm_loss: torch.Tensor  # LM loss on CoT / VQA answer tokens (0 when none)
    masked_fraction: float  # share of Feature Query States zeroed by Intention Decoupling


@dataclasses.dataclass
class ExpertContext:
    """Everything the velocity field is conditioned on, computed once per observation batch."""

    prefix: torch.Tensor  # [B, P, W]
    prefix_mask: torch.Tensor  # [B, P]
    embodiment_ids: torch.Tensor  # [B]
    cond: torch.Tensor  # C = Adapter(H): [B, n, W]

    def velocity_fn(self, expert: ActionExpert):
        return lambda x_t, t: expert.velocity(self.prefix, self.prefix_mask, self.embodiment_ids, x_t, t, self.cond)


class SyVLA(nn.Module):
    def __init__(self, cfg: SyVLAConfig, vlm=None, processor=None):
        super().__init__()
        self.cfg = cfg
        if vlm is None:
            vlm, processor = build_vlm(cfg.vlm)
        self.vlm, self.processor = vlm, processor
        d = vlm.config.text_config.hidden_size
        w = cfg.expert.width
        self.query_tokens = FeatureQueryTokens(cfg.num_query_tokens, d)
        self.adapter = Adapter(d, cfg.adapter_hidden or w, w)
        self.expert = ActionExpert(cfg.expert, cfg.embodiments, cfg.max_cameras)
        if cfg.expert.vision.pretrained and cfg.vlm.source != "debug":
            self.expert.load_pretrained_vision(cfg.expert.vision.pretrained)

    # ---- VLM ------------------------------------------------------------------------
    def vlm_hidden(self, vlm_inputs: dict, query_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states [B, L, d] with the learned Feature Query Tokens at their slots."""
        embeds = self.vlm.get_input_embeddings()(vlm_inputs["input_ids"])
        embeds = self.query_tokens.insert(embeds, query_mask)
        out = self.vlm.model(**vlm_inputs, inputs_embeds=embeds, use_cache=False)
        return out.last_hidden_state

    def lm_loss(self, hidden: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Next-token loss on labelled positions only (the LM head runs on those rows alone)."""
        if labels is None:
            return hidden.new_zeros(())
        targets = labels[:, 1:]
        sel = targets != IGNORE
        if not sel.any():
            return hidden.new_zeros(())
        logits = self.vlm.lm_head(hidden[:, :-1][sel])
        return F.cross_entropy(logits.float(), targets[sel])

    # ---- Action expert ----------------------------------------------------------------
    def expert_context(self, batch: Batch, states: torch.Tensor) -> ExpertContext:
        prefix, mask = self.expert.encode_context(batch.images, batch.view_mask, batch.state, batch.embodiment_ids)
        return ExpertContext(prefix, mask, batch.embodiment_ids, self.adapter(states))

    def per_sample_flow_losses(self, batch: Batch, tau: torch.Tensor, eps: torch.Tensor,
                               keep: torch.Tensor | None = None, decoupling: bool | None = None,
                               hidden: torch.Tensor | None = None, prefix_len: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """CFM losses l[b, i] of each robot sample on its (time, noise) pairs: ([B_r, N] fp32, keep [B_r, n] or None).

        tau [B_r, N] flow times and eps [B_r, N, T, max_action_dim] noises (`flow.cfm_losses`; one pair
        per sample in training, the stored FPO pairs in RL). The expert runs once on all B_r * N rows.
        Intention Decoupling (§3.2): with `keep` given, the Feature Query States are multiplied by that
        stored mask; otherwise, when on (`decoupling`, default cfg.decoupling.enabled, and tau > 0), pass 1
        finds it from the gradient of the mean loss w.r.t. H only, and it is returned. keep is None when
        no mask was applied. `hidden`: VLM hidden states [B, L, d] of this batch if already computed.
        `prefix_len` [B_r]: training-time action conditioning (`flow.cfm_losses`): each sample's first steps
        given clean, without loss.
        Gradients reach the weights as the caller's grad mode says.
        """
        if hidden is None:
            hidden = self.vlm_hidden(batch.vlm, batch.query_mask)
        states = self.query_tokens.gather(hidden, batch.query_mask, self.cfg.num_query_tokens)  # H [B_r, n, d]
        prefix, prefix_mask = self.expert.encode_context(batch.images, batch.view_mask, batch.state, batch.embodiment_ids)
        n_mc = tau.shape[1]
        rep = (lambda x: x.repeat_interleave(n_mc, dim=0))  # row b*N + i is sample b, pair i
        mask_r, emb_r = rep(prefix_mask), rep(batch.embodiment_ids)

        def losses(h, prefix=prefix):
            prefix_r, cond_r = rep(prefix), rep(self.adapter(h))
            velocity = (lambda x_t, t: self.expert.velocity(prefix_r, mask_r, emb_r, x_t, t, cond_r))
            return flow.cfm_losses(velocity, batch.actions, batch.action_mask, batch.dim_mask, tau, eps, fold_mc=True,
                                   prefix_len=prefix_len)

        dc = self.cfg.decoupling
        if keep is not None:
            states = states * keep.to(states.device).unsqueeze(-1).to(states.dtype)
        elif (dc.enabled if decoupling is None else decoupling) and dc.tau > 0:
            # §3.2 pass 1 on detached inputs: gradients w.r.t. H only, no parameter grads, no VLM rerun.
            states, keep = decoupled_states(states, lambda h: losses(h, prefix.detach()).mean(), dc.tau,
                                            getattr(torch, dc.probe_dtype))
        return losses(states), keep  # §3.2 pass 2: the losses that are optimized, on the masked H

    def forward(self, batch: Batch, generator: torch.Generator | None = None,
                decoupling: bool | None = None) -> StepOutput:
        """Training losses for one batch (robot and VQA samples mixed): one flow time and noise per robot
        sample; `decoupling` None follows cfg.decoupling.enabled (False/True: ablation and tests)."""
        hidden = self.vlm_hidden(batch.vlm, batch.query_mask)
        lm_loss = self.lm_loss(hidden, batch.lm_labels)
        if batch.num_robot == 0:
            zero = hidden.new_zeros(())
            return StepOutput(self.cfg.lm_loss_weight * lm_loss, zero, lm_loss, 0.0)
        t = flow.sample_time(batch.num_robot, self.cfg.flow, generator, hidden.device)
        noise = torch.randn(batch.actions.shape, generator=generator).to(hidden.device, batch.actions.dtype)
        losses, keep = self.per_sample_flow_losses(batch, t[:, None], noise[:, None], decoupling=decoupling,
                                                   hidden=hidden, prefix_len=self._draw_prefix(batch.num_robot, generator))
        a_loss = losses.mean()
        masked_fraction = 0.0 if keep is None else (keep.numel() - keep.sum().item()) / keep.numel()
        return StepOutput(a_loss + self.cfg.lm_loss_weight * lm_loss, a_loss, lm_loss, masked_fraction)

    def _draw_prefix(self, n: int, generator: torch.Generator | None) -> torch.Tensor | None:
        """Training-time action conditioning: per robot sample, with probability flow.prefix_conditioning a
        clean prefix of d ~ U{1..flow.max_prefix} steps, else 0; None when the option is off."""
        fc = self.cfg.flow
        if fc.prefix_conditioning <= 0:
            return None
        on = torch.rand(n, generator=generator) < fc.prefix_conditioning
        d = torch.randint(1, fc.max_prefix + 1, (n,), generator=generator)
        return torch.where(on, d, torch.zeros_like(d))

    # ---- Inference ------------------------------------------------------------------------
    @torch.no_grad()
    def generate_cot(self, batch: Batch) -> list[str]:
        """Think-Before-Act: bounded greedy chain of thought per robot sample, stopped at <|im_end|>.

        `batch` must be built without query slots' content mattering: generation runs on the
        prompt up to the assistant header (query slots stripped).
        """
        ids, attn = batch.vlm["input_ids"], batch.vlm["attention_mask"]
        keep = ~batch.query_mask
        width = int(keep.sum(1).max())
        # Query slots are trailing; dropping them keeps left padding intact.
        inputs = {k: v for k, v in batch.vlm.items()}
        inputs["input_ids"] = ids[:, :width]
        inputs["attention_mask"] = attn[:, :width]
        if "mm_token_type_ids" in inputs:
            inputs["mm_token_type_ids"] = inputs["mm_token_type_ids"][:, :width]
        return self.generate_text(inputs, self.cfg.max_cot_tokens)

    @torch.no_grad()
    def generate_text(self, vlm_inputs: dict, max_new_tokens: int) -> list[str]:
        """Greedy continuation of left-padded prompts (`vlm_inputs` as the processor makes them), each
        stopped at <|im_end|>: the assistant turn's text without its closing token."""
        tok = self.processor.tokenizer
        width = vlm_inputs["input_ids"].shape[1]
        out = self.vlm.generate(**vlm_inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                eos_token_id=tok.convert_tokens_to_ids(IM_END), pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, width:], skip_special_tokens=False)
        return [t.split(IM_END)[0].replace(tok.pad_token, "") for t in texts]

    @torch.no_grad()
    def sample_actions(self, batch: Batch, noise: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, num_steps: int | None = None,
                       guidance: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Normalized action chunks [B_r, T, max_action_dim] by Euler integration from noise (t=1) to data (t=0).

        guidance: (Y, W), both [B_r, T, max_action_dim]: real-time chunking, each step guided toward the
        committed prefix Y where its soft mask W > 0 (`flow.sample_guided`); rows with W = 0 are plain. A model
        trained with action conditioning (expert.step_times) is instead given Y clean on the steps where W = 1
        (the delay's steps, `flow.rtc_weights`) and samples the rest (`flow.sample_conditioned`)."""
        return self.sample_actions_and_states(batch, noise, generator, num_steps, guidance)[0]

    @torch.no_grad()
    def query_states(self, batch: Batch) -> torch.Tensor:
        """The VLM's Feature Query States H [B_r, n, d] of the robot samples (the VLM forward)."""
        hidden = self.vlm_hidden(batch.vlm, batch.query_mask)
        return self.query_tokens.gather(hidden, batch.query_mask, self.cfg.num_query_tokens)

    @torch.no_grad()
    def sample_actions_and_states(self, batch: Batch, noise: torch.Tensor | None = None,
                                  generator: torch.Generator | None = None, num_steps: int | None = None,
                                  guidance: tuple[torch.Tensor, torch.Tensor] | None = None,
                                  states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample_actions` plus the Feature Query States it used. Given `states` (an earlier call's, §3.1:
        the VLM and the action expert may run asynchronously), the VLM forward is skipped and only the
        expert runs on the batch's fresh images and state."""
        if states is None:
            states = self.query_states(batch)
        ctx = self.expert_context(batch, states)
        shape = (batch.num_robot, self.cfg.expert.chunk_len, self.cfg.max_action_dim)
        if noise is None:
            noise = torch.randn(shape, generator=generator)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {list(shape)}, got {list(noise.shape)}")
        noise = noise.to(states.device, states.dtype)
        steps = num_steps or self.cfg.flow.num_steps
        if guidance is None:
            x = flow.sample(ctx.velocity_fn(self.expert), noise, steps)
        elif self.cfg.expert.step_times:
            target, weights = guidance
            known = weights.amax(dim=-1) >= 1.0  # W = 1 exactly on the delay's steps (flow.rtc_weights)
            x = flow.sample_conditioned(ctx.velocity_fn(self.expert), noise, steps, target, known)
        else:
            x = flow.sample_guided(ctx.velocity_fn(self.expert), noise, steps, *guidance)
        return x * batch.dim_mask.unsqueeze(1).to(x.dtype), states
