"""A tiny random-weight Stable Diffusion pipeline, built from configs and saved to a folder.

No machine here reaches a model hub and no package ships diffusion weights
(shared/MODELS.md), so the diffusers generator is tested on a pipeline with
the real Stable Diffusion layout (``model_index.json``, ``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) whose components are a few
thousand random parameters: :class:`~media.images.diffusers_image.DiffusersImageGenerator`
loads it with ``from_pretrained(folder, local_files_only=True)`` and runs the
real denoising loop, callbacks and VAE decode. The pictures are noise; the
code path is the production one.

The tokenizer is a real CLIP byte-level BPE tokenizer over a vocabulary
written here (every byte, every byte at a word's end, a few merges), with
``model_max_length=77`` as in Stable Diffusion.

:func:`build_tiny_sd_pipeline` takes about a second; the ``tiny_sd_folder``
fixture in tests/test_images.py builds it once per test session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Merges over the byte alphabet, enough to exercise BPE on the test prompts.
_MERGES = ["t h", "th e</w>", "a n", "an d</w>", "o r", "e r</w>", "i n", "in g</w>"]
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


def write_tokenizer_files(folder: Path) -> int:
    """Write a CLIP ``vocab.json`` and ``merges.txt`` into ``folder``; return the vocab size."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    for merge in _MERGES:
        tokens.append(merge.replace(" ", ""))
    tokens.extend(SPECIAL_TOKENS)
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(_MERGES) + "\n", encoding="utf-8"
    )
    return len(vocab)


def build_tiny_sd_pipeline(folder: Path) -> Path:
    """Build a random-weight Stable Diffusion pipeline and ``save_pretrained`` it into ``folder``.

    The VAE has four blocks, so images are 8x the latents as in SD 1.5
    (64x64 pixels -> 8x8 latents); the safety checker is left out, as
    Salon runs its own NSFW check (model_index.json records it as null).
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 4, 4, 4),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=64,
    )
    tokenizer_dir = folder.parent / f"{folder.name}-tokenizer-source"
    vocab_size = write_tokenizer_files(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=77)
    bos, eos = (tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
            max_position_embeddings=77,
            projection_dim=16,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,  # as SD 1.5 ships it (0 draws a deprecation warning)
    )
    pipeline: Any = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(folder))
    return folder
