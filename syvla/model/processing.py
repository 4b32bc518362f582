"""The one batch builder: `Sample`s (syvla/model/sample.py) -> tensors.

Training, serving and RL all call `build_batch`, so normalization, prompt
format and image preprocessing exist once.

Prompt format (Qwen chat markup):
    <|im_start|>user\n<|vision_start|><|image_pad|>...<|vision_end|>{task}<|im_end|>\n<|im_start|>assistant\n
    [{cot}<|im_end|>]  <|fq|> x n
The chain of thought is optional (Think-Before-Act, §3.1); the Feature Query
Tokens always come last. VQA samples are whole conversations with no query
slots; their assistant turns carry the LM loss.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from PIL import Image

from syvla import constants as K
from syvla.model import vlm as V
from syvla.model.config import SyVLAConfig
from syvla.model.sample import Sample
from syvla.normalize import NormStats

IGNORE = -100


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [size, size, 3] (bilinear)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def user_turn(text: str, with_image: bool = True) -> str:
    image = f"{V.VISION_START}{V.IMAGE_PAD}{V.VISION_END}" if with_image else ""
    return f"{V.IM_START}user\n{image}{text}{V.IM_END}\n"


def robot_prompt(task: str, cot: str | None, num_queries: int) -> str:
    """Text for a robot sample: user turn, assistant header, optional CoT, query slots."""
    text = user_turn(task) + f"{V.IM_START}assistant\n"
    if cot is not None:
        text += cot + V.IM_END
    return text + V.QUERY_TOKEN * num_queries


def answer_prompt(question: str) -> str:
    """A VQA question with one image, up to the assistant header: what the model continues to answer."""
    return user_turn(question) + f"{V.IM_START}assistant\n"


def vqa_text(conversation: list[dict]) -> tuple[str, int]:
    """Conversation turns -> (text, number of <image> placeholders used)."""
    text, n_images = "", 0
    for turn in conversation:
        role, content = turn["role"], turn["content"]
        if role not in ("user", "assistant", "system"):
            raise ValueError(f"conversation role must be user/assistant/system, got {role!r}")
        n_images += content.count("<image>")
        content = content.replace("<image>", f"{V.VISION_START}{V.IMAGE_PAD}{V.VISION_END}")
        text += f"{V.IM_START}{role}\n{content}{V.IM_END}\n"
    return text, n_images


def with_image_placeholders(sample: Sample) -> Sample:
    """VQA samples whose conversation carries no "<image>" placeholder (the LLaVA reader strips them)
    get one per image at the start of the first user turn, LLaVA's own convention."""
    conv, n = sample.conversation, len(sample.images)
    if sample.kind != K.KIND_VQA or not conv or not n or any("<image>" in t["content"] for t in conv):
        return sample
    first = next((i for i, t in enumerate(conv) if t["role"] == "user"), 0)
    conv = [dict(t) for t in conv]
    conv[first]["content"] = "<image>\n" * n + conv[first]["content"]
    return dataclasses.replace(sample, conversation=conv)


def assistant_labels(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """LM labels: tokens of assistant turns (content and closing <|im_end|>), IGNORE elsewhere.

    Query slots are never labels. input_ids [B, L] -> labels [B, L].
    """
    im_start = tokenizer.convert_tokens_to_ids(V.IM_START)
    im_end = tokenizer.convert_tokens_to_ids(V.IM_END)
    query = tokenizer.convert_tokens_to_ids(V.QUERY_TOKEN)
    header = tokenizer("assistant\n", add_special_tokens=False)["input_ids"]
    labels = torch.full_like(input_ids, IGNORE)
    for row, ids in enumerate(input_ids.tolist()):
        inside = False
        i = 0
        while i < len(ids):
            if ids[i] == im_start:
                inside = ids[i + 1 : i + 1 + len(header)] == header
                i += 1 + (len(header) if inside else 0)
                continue
            if inside and ids[i] != query:
                labels[row, i] = ids[i]
                if ids[i] == im_end:
                    inside = False
            i += 1
    return labels


@dataclasses.dataclass
class Batch:
    """Tensors for one step. VLM part covers every sample; expert part the robot samples (rows `robot_rows`)."""

    vlm: dict[str, torch.Tensor]  # input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids
    query_mask: torch.Tensor  # [B, L] bool: Feature Query Token slots
    lm_labels: torch.Tensor | None  # [B, L], IGNORE where no LM loss
    robot_rows: torch.Tensor  # [B_r] indices of robot samples in the VLM batch
    embodiment_ids: torch.Tensor  # [B_r]
    images: torch.Tensor  # [B_r, V, 3, S, S] float in [0, 1]
    view_mask: torch.Tensor  # [B_r, V] bool
    state: torch.Tensor  # [B_r, max_state_dim] normalized, zero-padded
    actions: torch.Tensor | None  # [B_r, T, max_action_dim] normalized, zero-padded
    action_mask: torch.Tensor | None  # [B_r, T] bool
    dim_mask: torch.Tensor  # [B_r, max_action_dim] bool: dims this robot has

    def to(self, device) -> "Batch":
        def move(x):
            if isinstance(x, torch.Tensor):
                return x.to(device)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x

        return Batch(**{f.name: move(getattr(self, f.name)) for f in dataclasses.fields(self)})

    @property
    def num_robot(self) -> int:
        return int(self.robot_rows.numel())


def build_batch(samples: list[Sample], processor, cfg: SyVLAConfig, norm_stats: NormStats, *,
                training: bool = True, cots: list[str | None] | None = None, vlm: bool = True) -> Batch:
    """samples: `Sample`s (robot and VQA mixed). With training=False, actions are not required.

    cots overrides each robot sample's chain of thought (inference: the text `generate_cot` produced,
    which stops at <|im_end|>, so the prompt closes it as usual). vlm=False builds the action expert's
    part only (robot samples; inference that reuses earlier Feature Query States): no tokens, no VLM pixels.
    """
    if not vlm:
        if any(s.kind != K.KIND_ROBOT for s in samples):
            raise ValueError("build_batch(vlm=False) takes robot samples only")
        expert = _expert_tensors(samples, cfg, norm_stats, training)
        return Batch(vlm={}, query_mask=torch.zeros(len(samples), 0, dtype=torch.bool), lm_labels=None,
                     robot_rows=torch.arange(len(samples)), **expert)
    if not samples:
        raise ValueError("build_batch needs at least one sample")
    texts, vlm_images, robot = [], [], []
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise TypeError(f"sample {i}: build_batch takes syvla.model.sample.Sample, got {type(s).__name__}")
        if s.kind == K.KIND_VQA:
            s = with_image_placeholders(s)
            if not s.conversation:
                raise ValueError(f"sample {i}: VQA sample needs a non-empty 'conversation'")
            text, n_img = vqa_text(s.conversation)
            imgs = list(s.images.values())
            if n_img != len(imgs):
                raise ValueError(f"sample {i}: conversation has {n_img} <image> placeholders but {len(imgs)} images")
            texts.append(text)
            vlm_images += [resize(img, cfg.vlm.image_size) for img in imgs]
            continue
        emb = cfg.embodiment(s.embodiment)
        missing = [c for c in emb.cameras if c not in s.images]
        if missing:
            raise ValueError(f"sample {i}: missing camera(s) {missing} for embodiment {emb.name!r}")
        cot = cots[i] if cots is not None else s.cot
        texts.append(robot_prompt(_truncate(s.task, cfg, processor), cot, cfg.num_query_tokens))
        vlm_images.append(resize(s.images[emb.prompt_camera], cfg.vlm.image_size))
        robot.append(i)

    enc = processor(text=texts, images=vlm_images or None, padding=True, return_tensors="pt")
    query_id = processor.tokenizer.convert_tokens_to_ids(V.QUERY_TOKEN)
    query_mask = enc["input_ids"] == query_id
    lm_labels = assistant_labels(enc["input_ids"], processor.tokenizer) if training else None
    vlm_inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids") if k in enc}

    expert = _expert_tensors([samples[i] for i in robot], cfg, norm_stats, training)
    return Batch(vlm=vlm_inputs, query_mask=query_mask, lm_labels=lm_labels,
                 robot_rows=torch.tensor(robot, dtype=torch.long), **expert)


def _truncate(task: str, cfg: SyVLAConfig, processor) -> str:
    ids = processor.tokenizer(task, add_special_tokens=False)["input_ids"]
    if len(ids) <= cfg.max_prompt_tokens:
        return task
    return processor.tokenizer.decode(ids[: cfg.max_prompt_tokens])


def _expert_tensors(samples: list[Sample], cfg: SyVLAConfig, norm_stats: NormStats, training: bool) -> dict:
    b, size = len(samples), cfg.expert.vision.image_size
    nv, t = cfg.max_cameras, cfg.expert.chunk_len
    images = torch.zeros(b, nv, 3, size, size)
    view_mask = torch.zeros(b, nv, dtype=torch.bool)
    state = torch.zeros(b, cfg.max_state_dim)
    dim_mask = torch.zeros(b, cfg.max_action_dim, dtype=torch.bool)
    emb_ids = torch.zeros(b, dtype=torch.long)
    actions = torch.zeros(b, t, cfg.max_action_dim) if training else None
    action_mask = torch.zeros(b, t, dtype=torch.bool) if training else None
    for r, s in enumerate(samples):
        emb = cfg.embodiment(s.embodiment)
        stats = norm_stats[emb.name]
        emb_ids[r] = cfg.embodiment_index(emb.name)
        for v, cam in enumerate(emb.cameras):
            img = resize(s.images[cam], size)
            images[r, v] = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0
            view_mask[r, v] = True
        st = s.state
        if st.shape != (emb.state_dim,):
            raise ValueError(f"state of embodiment {emb.name!r} must have shape [{emb.state_dim}], got {list(st.shape)}")
        if not np.all(np.isfinite(st)):
            raise ValueError(f"state of embodiment {emb.name!r} has non-finite values")
        state[r, : emb.state_dim] = torch.from_numpy(stats.state.normalize(st))
        dim_mask[r, : emb.action_dim] = True
        if training:
            a = s.actions
            if a is None:
                raise ValueError(f"sample of embodiment {emb.name!r} has no actions (training batches need them)")
            if a.shape[1] != emb.action_dim or a.shape[0] > t:
                raise ValueError(f"actions of embodiment {emb.name!r} must be [<= {t}, {emb.action_dim}], got {list(a.shape)}")
            actions[r, : a.shape[0], : emb.action_dim] = torch.from_numpy(stats.action.normalize(a))
            m = s.action_mask if s.action_mask is not None else np.ones(a.shape[0], bool)
            action_mask[r, : m.shape[0]] = torch.from_numpy(m)
    return dict(embodiment_ids=emb_ids, images=images, view_mask=view_mask, state=state,
                actions=actions, action_mask=action_mask, dim_mask=dim_mask)
