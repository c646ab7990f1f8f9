"""Tiny randomly initialised Stable Diffusion and autoencoder snapshots in diffusers layout, made locally
(a CLIP tokenizer from a vocabulary written here), so the latent and LoRA families run without downloads."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.autoencoders.vq_model import VQModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TOKEN_LENGTH = 32
LORA = {"rank": 4, "alpha": 4, "targets": ["to_q", "to_k", "to_v", "to_out.0"]}


def tiny_autoencoder(path: Path, channels: int = 3, seed: int = 0) -> Path:
    """An AutoencoderKL of 4 latent channels that halves the image size, saved with save_pretrained."""
    torch.manual_seed(seed)
    AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
    ).save_pretrained(path)
    return path


def tiny_tokenizer(path: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over single lowercase letters and digits (no merges)."""
    path.mkdir(parents=True, exist_ok=True)
    symbols = list(string.ascii_lowercase + string.digits)
    tokens = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=TOKEN_LENGTH
    )
    tokenizer.save_pretrained(path)
    return tokenizer


def tiny_stable_diffusion(path: Path, seed: int = 0) -> Path:
    """unet/, text_encoder/, tokenizer/, vae/, scheduler/ of a Stable Diffusion of a few thousand weights."""
    tokenizer = tiny_tokenizer(path / "tokenizer")
    torch.manual_seed(seed)
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=TOKEN_LENGTH,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).save_pretrained(path / "text_encoder")
    UNet2DConditionModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    ).save_pretrained(path / "unet")
    tiny_autoencoder(path / "vae", seed=seed)
    DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        steps_offset=1,
    ).save_pretrained(path / "scheduler")
    return path


def tiny_vq_autoencoder(path: Path, seed: int = 0) -> Path:
    """A VQModel of 3 latent channels that divides the image size by 4 (the layout of an LDM's VQ-f4,
    e.g. CompVis/ldm-celebahq-256), saved with save_pretrained under path/vqvae as in such a snapshot."""
    torch.manual_seed(seed)
    VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        layers_per_block=1,
        latent_channels=3,
        num_vq_embeddings=16,
        vq_embed_dim=3,
        norm_num_groups=4,
        sample_size=32,
    ).save_pretrained(path / "vqvae")
    return path
