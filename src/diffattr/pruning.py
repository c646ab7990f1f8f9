"""Structured channel pruning of a diffusers UNet with torch-pruning (magnitude importance).

`ratio` is the fraction of channels REMOVED from every prunable layer (0.3 keeps 70%). GroupNorm
needs channel counts divisible by its groups and attention needs them divisible by its heads, so the
counts kept are rounded down to those multiples; the record states the fraction actually removed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch_pruning as tp
from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.models.upsampling import Upsample2D

from diffattr.errors import InputError


@dataclass
class PruningRecord:
    """What pruning did: requested and achieved fraction of channels removed, and parameter counts."""

    ratio: float
    channels_before: int
    channels_after: int
    parameters_before: int
    parameters_after: int

    @property
    def removed_fraction(self) -> float:
        return 1 - self.channels_after / self.channels_before

    def to_dict(self) -> dict:
        return {**asdict(self), "removed_fraction": self.removed_fraction}


def prunable_channels(unet: UNet2DModel) -> int:
    """Output channels of every convolution except the last one (whose channels are the image's)."""
    return sum(
        m.out_channels for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and m is not unet.conv_out
    )


def prune_unet(unet: UNet2DModel, ratio: float) -> PruningRecord:
    """Remove `ratio` of the channels of `unet` in place, the lowest-L2-norm ones first."""
    if not 0 <= ratio < 1:
        raise InputError(f"config key 'shapley.pruning.ratio': {ratio} is not in [0, 1) (fraction removed)")
    cfg = unet.config
    before = prunable_channels(unet), sum(p.numel() for p in unet.parameters())
    example = {
        "sample": torch.zeros(1, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=unet.device),
        "timestep": torch.zeros(1, dtype=torch.long, device=unet.device),
    }
    heads = {}
    for m in unet.modules():
        if isinstance(m, Attention):
            heads.update({m.to_q: m.heads, m.to_k: m.heads, m.to_v: m.heads})
    pruner = tp.pruner.MagnitudePruner(
        unet,
        example_inputs=example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[unet.conv_out],
        num_heads=heads,
        output_transform=lambda out: out.sample,
    )
    pruner.step()
    for m in unet.modules():  # diffusers keeps channel counts as attributes it asserts on
        conv = getattr(m, "conv", None)
        if isinstance(m, Downsample2D | Upsample2D) and isinstance(conv, torch.nn.Conv2d):
            m.channels, m.out_channels = conv.in_channels, conv.out_channels
        if isinstance(m, Attention):
            m.inner_dim = m.to_q.out_features
    unet.diffattr_pruned = True
    return PruningRecord(
        ratio, before[0], prunable_channels(unet), before[1], sum(p.numel() for p in unet.parameters())
    )
