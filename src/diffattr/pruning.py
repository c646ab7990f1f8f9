"""Structured channel pruning of a diffusers UNet that never breaks it (torch-pruning's dependency graph).

`ratio` is the fraction of channels REMOVED (0.3 keeps 70%), counted over the output channels of every
Conv2d and Linear layer except the output convolution. Channels coupled through residuals,
concatenations, norms and attention form one dependency group. A group's channels are cut into L equal
blocks, L the least common multiple of the GroupNorm group counts, attention head counts and chunk
counts its channels meet, and the same positions (the lowest mean L2 magnitude) are removed from every
block, so each pruned count stays a multiple of all of them. Each group keeps one of its two feasible
counts nearest to (1 - ratio); which ones round up is chosen so that the total removed is as close to
`ratio` as the blocks allow. A group no such L divides is left whole. The record states the requested
and the achieved fraction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch_pruning as tp
from diffusers.models.attention_processor import Attention

from diffattr.architecture import sync_diffusers_attributes
from diffattr.errors import InputError

LAYERS = (torch.nn.Conv2d, torch.nn.Linear)


@dataclass
class PruningRecord:
    """What pruning did: fraction of channels removed as requested (`ratio`) and as achieved."""

    ratio: float
    channels_before: int
    channels_after: int
    parameters_before: int
    parameters_after: int
    groups_pruned: int
    groups_left_whole: int

    @property
    def removed_fraction(self) -> float:
        return 1 - self.channels_after / self.channels_before

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "removed_fraction": self.removed_fraction,
            "meaning": "ratio = requested and removed_fraction = achieved fraction of channels REMOVED"
            " (output channels of Conv2d and Linear layers, the output convolution excluded)",
        }


@dataclass
class _Group:
    """One dependency group: its root layer, width, blocks, channels counted, per-position importance."""

    root: torch.nn.Module
    width: int
    blocks: int
    channels: int
    importance: torch.Tensor
    keep: int = 0  # positions kept per block

    @property
    def block_size(self) -> int:
        return self.width // self.blocks


def _output_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    return [unet.conv_out] if isinstance(getattr(unet, "conv_out", None), torch.nn.Module) else []


def prunable_channels(unet: torch.nn.Module) -> int:
    """Output channels of every Conv2d and Linear layer except the output convolution."""
    skip = set(_output_layers(unet))
    return sum(_width(m, out=True) for m in unet.modules() if isinstance(m, LAYERS) and m not in skip)


def _width(module: torch.nn.Module, out: bool) -> int:
    if isinstance(module, torch.nn.Conv2d):
        return module.out_channels if out else module.in_channels
    return module.out_features if out else module.in_features


def _head_counts(unet: torch.nn.Module) -> dict[tuple[torch.nn.Module, bool], int]:
    """(layer, pruned on its output?) -> heads, for the attention projections that split into heads."""
    heads = {}
    for m in unet.modules():
        if isinstance(m, Attention):
            heads.update({(m.to_q, True): m.heads, (m.to_k, True): m.heads, (m.to_v, True): m.heads})
            heads[(m.to_out[0], False)] = m.heads
    return heads


def _blocks(dg: tp.DependencyGraph, group, width: int, heads: dict) -> int | None:
    """L for a group rooted on `width` channels, or None when its structure does not divide them."""
    blocks = 1
    for dep, _ in group:
        module, out = dep.target.module, dg.is_out_channel_pruning_fn(dep.handler)
        if isinstance(module, torch.nn.GroupNorm):
            channels, structure = module.num_channels, module.num_groups
        elif isinstance(module, LAYERS):
            channels = _width(module, out)
            structure = heads.get((module, out), getattr(module, "groups", 1))
        else:
            continue
        if channels < width:  # the root is chunked onto this layer: same positions in every chunk
            if width % channels:
                return None
            structure *= width // channels
        blocks = math.lcm(blocks, structure)
    return blocks if width % blocks == 0 and width // blocks > 1 else None


def _apportion(groups: list[_Group], fixed: int, ratio: float) -> None:
    """Set each group's kept positions per block to floor or ceil of (1 - ratio) of its block size,
    rounding up the groups nearest to up first while that brings the total kept closer to the target."""
    target = (1 - ratio) * (fixed + sum(g.channels for g in groups))
    kept = float(fixed)
    for g in groups:
        g.keep = max(1, math.floor(g.block_size * (1 - ratio)))
        kept += g.channels * g.keep / g.block_size
    order = sorted(groups, key=lambda g: g.block_size * (1 - ratio) - g.keep, reverse=True)
    for g in order:
        step = g.channels / g.block_size
        if g.keep < g.block_size and abs(target - kept - step) < abs(target - kept):
            g.keep += 1
            kept += step


def _check(unet: torch.nn.Module, example: dict) -> None:
    """Every GroupNorm and attention still divides its channels, and the network runs."""
    for name, m in unet.named_modules():
        if isinstance(m, torch.nn.GroupNorm) and m.num_channels % m.num_groups:
            raise RuntimeError(f"pruning left {m.num_channels} channels in {m.num_groups} groups at {name}")
        if isinstance(m, Attention) and m.to_q.out_features % m.heads:
            raise RuntimeError(f"pruning left {m.to_q.out_features} channels for {m.heads} heads at {name}")
    with torch.no_grad():
        unet(**example)


def prune_unet(unet: torch.nn.Module, ratio: float) -> PruningRecord:
    """Remove about `ratio` of the channels of `unet` in place, lowest-L2-magnitude positions first."""
    if not 0 <= ratio < 1:
        raise InputError(f"config key 'shapley.pruning.ratio': {ratio} is not in [0, 1) (fraction removed)")
    cfg = unet.config
    before = prunable_channels(unet), sum(p.numel() for p in unet.parameters())
    example = {
        "sample": torch.zeros(1, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=unet.device),
        "timestep": torch.zeros(1, dtype=torch.long, device=unet.device),
    }
    was_training = unet.training
    unet.eval()
    dg = tp.DependencyGraph().build_dependency(
        unet, example_inputs=example, output_transform=lambda out: out.sample
    )
    heads, importance = _head_counts(unet), tp.importance.GroupMagnitudeImportance(p=2)
    groups, fixed, whole = [], before[0], 0
    for group in dg.get_all_groups(ignored_layers=_output_layers(unet), root_module_types=list(LAYERS)):
        root = group[0].dep.target.module
        width = _width(root, out=True)
        layers = {
            dep.target.module
            for dep, _ in group
            if isinstance(dep.target.module, LAYERS) and dg.is_out_channel_pruning_fn(dep.handler)
        }
        channels = sum(_width(m, out=True) for m in layers)
        blocks = _blocks(dg, group, width, heads)
        imp = importance(group) if blocks else None
        if blocks is None or imp is None or len(imp) != width:
            whole += 1
            continue
        fixed -= channels
        groups.append(_Group(root, width, blocks, channels, imp.view(blocks, -1).mean(0).cpu()))
    _apportion(groups, fixed, ratio)
    for g in groups:
        removed = torch.argsort(g.importance)[: g.block_size - g.keep].tolist()
        if removed:
            idxs = [b * g.block_size + i for b in range(g.blocks) for i in sorted(removed)]
            dg.get_pruning_group(g.root, dg.get_pruner_of_module(g.root).prune_out_channels, idxs).prune()
    sync_diffusers_attributes(unet)
    _check(unet, example)
    unet.train(was_training)
    unet.diffattr_pruned = True
    return PruningRecord(
        ratio,
        before[0],
        prunable_channels(unet),
        before[1],
        sum(p.numel() for p in unet.parameters()),
        groups_pruned=sum(g.keep < g.block_size for g in groups),
        groups_left_whole=whole + sum(g.keep == g.block_size for g in groups),
    )
