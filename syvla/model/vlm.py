"""The Qwen2.5-VL backbone and its processor.

`debug`: a tiny random Qwen2.5-VL and a byte-level BPE tokenizer trained
offline on a small built-in corpus, wrapped with the Qwen special tokens and
a real `Qwen2_5_VLProcessor` (image pad expansion, pixel patches, grid_thw).
Otherwise `VLMConfig.source` is a local directory or hub name and both come
from `from_pretrained`.

Our own special token `<|fq|>` marks the Feature Query Token slots (§3.1):
the model substitutes learnable embeddings at those positions.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

import syvla._compat  # noqa: F401  (torchvision's ops first, however syvla itself was imported)
from syvla.model.config import VLMConfig

QUERY_TOKEN = "<|fq|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
ENDOFTEXT = "<|endoftext|>"
_QWEN_SPECIALS = [
    ENDOFTEXT, IM_START, IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", VISION_START, VISION_END, "<|vision_pad|>", IMAGE_PAD, VIDEO_PAD,
]

# Enough English for a byte-level BPE to learn robot-instruction words; bytes cover the rest.
_CORPUS = """
reach push pick place the red blue green object goal position target gripper arm robot move open close
drawer door window button press lever faucet turn handle peg insert hammer nail shelf bin basket ball
first then next finally grasp lift lower align slide rotate toward away from above below left right
what is in the image describe answer question yes no color shape count how many where which
approach the puck and push it to the goal. locate the block, grasp it, carry it to the target.
user assistant system you are a helpful robot. plan: step one step two step three done
"""


def _train_debug_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        special_tokens=_QWEN_SPECIALS + [QUERY_TOKEN],
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tokenizer.json"
        tok.save(str(path))
        fast = Qwen2TokenizerFast(
            tokenizer_file=str(path), unk_token=None, bos_token=None, eos_token=IM_END, pad_token=ENDOFTEXT,
            additional_special_tokens=_QWEN_SPECIALS[1:] + [QUERY_TOKEN],
        )
    fast.padding_side = "left"
    return fast


def build_debug_processor(cfg: VLMConfig):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = _train_debug_tokenizer(cfg.vocab_size)
    pixels = cfg.image_size * cfg.image_size
    size = {"shortest_edge": pixels, "longest_edge": pixels}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size),
    )


def debug_vlm_config(cfg: VLMConfig, processor):
    from transformers import Qwen2_5_VLConfig

    tok = processor.tokenizer
    head_dim = cfg.hidden_size // cfg.num_heads
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=4096,
            # M-RoPE splits head_dim/2 rotary frequencies over (time, height, width).
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                             "mrope_section": _mrope_section(head_dim)},
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=tok.convert_tokens_to_ids(IM_END),
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size, intermediate_size=cfg.vision_hidden_size * 2,
            num_heads=cfg.vision_heads, out_hidden_size=cfg.hidden_size, fullatt_block_indexes=[cfg.vision_depth - 1],
            window_size=56, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_PAD),
        video_token_id=tok.convert_tokens_to_ids(VIDEO_PAD),
        vision_start_token_id=tok.convert_tokens_to_ids(VISION_START),
        vision_end_token_id=tok.convert_tokens_to_ids(VISION_END),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids(IM_END),
        pad_token_id=tok.pad_token_id,
    )


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def build_vlm(cfg: VLMConfig, vlm_config=None, processor=None):
    """Return (Qwen2_5_VLForConditionalGeneration, processor).

    vlm_config/processor given (a checkpoint being loaded): build the architecture
    from them with random weights; the caller loads the saved state dict.
    """
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    dtype = getattr(torch, cfg.dtype)
    if processor is None:
        processor = build_debug_processor(cfg) if cfg.source == "debug" else AutoProcessor.from_pretrained(cfg.source)
        processor.tokenizer.padding_side = "left"
    ensure_query_token(processor.tokenizer)
    if vlm_config is not None:
        if isinstance(vlm_config, dict):
            vlm_config = Qwen2_5_VLConfig.from_dict(vlm_config)
        model = Qwen2_5_VLForConditionalGeneration(vlm_config)
    elif cfg.source == "debug":
        model = Qwen2_5_VLForConditionalGeneration(debug_vlm_config(cfg, processor))
    else:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(cfg.source, dtype=dtype)
    model.to(dtype)
    if model.get_input_embeddings().num_embeddings < len(processor.tokenizer):
        model.resize_token_embeddings(len(processor.tokenizer))
    return model, processor


def ensure_query_token(tokenizer) -> int:
    """Register `<|fq|>` (a no-op for tokenizers that have it) and return its id."""
    if QUERY_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [QUERY_TOKEN]}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(QUERY_TOKEN)


def save_processor(processor, directory: Path) -> None:
    processor.save_pretrained(str(directory))


def load_processor(directory: Path):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(directory))
    processor.tokenizer.padding_side = "left"
    return processor


def vlm_config_dict(model) -> dict:
    return json.loads(model.config.to_json_string())
