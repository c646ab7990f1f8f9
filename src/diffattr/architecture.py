"""A pruned UNet on disk without pickle: weights as safetensors, its architecture as data.

A pruned network no longer matches the diffusers config it was built from, so besides that config
(`config.json`) and the weights (`diffusion_pytorch_model.safetensors`) the folder holds
`pruned_architecture.json`: the channel counts of every layer. Loading builds the network from the
config, resizes each recorded layer to its counts and loads the weights; nothing in the folder can run
code. Folders holding only pickled weights (.bin, .pt, .pth, .pkl, .ckpt) are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.models.upsampling import Upsample2D
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from diffattr.errors import InputError

ARCHITECTURE = "pruned_architecture.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# The diffusers classes a pruned architecture may name (a name in a file never picks arbitrary code).
CLASSES = {"UNet2DModel": UNet2DModel}
SHAPE_KEYS = {
    torch.nn.Conv2d: ("in_channels", "out_channels"),
    torch.nn.Linear: ("in_features", "out_features"),
    torch.nn.GroupNorm: ("num_groups", "num_channels"),
}


def is_pruned(net: torch.nn.Module) -> bool:
    """Whether `net` was pruned (its shapes differ from its config), set by pruning and by loading."""
    return bool(getattr(net, "diffattr_pruned", False))


def layer_shapes(net: torch.nn.Module) -> dict[str, dict[str, int]]:
    """The channel counts of every Conv2d, Linear and GroupNorm layer, by module name."""
    shapes = {}
    for name, module in net.named_modules():
        keys = SHAPE_KEYS.get(type(module))
        if keys:
            shapes[name] = {key: int(getattr(module, key)) for key in keys}
    return shapes


def sync_diffusers_attributes(net: torch.nn.Module) -> None:
    """Copy channel counts that diffusers blocks keep as attributes (and assert on) from their layers."""
    for module in net.modules():
        conv = getattr(module, "conv", None)
        if isinstance(module, Downsample2D | Upsample2D) and isinstance(conv, torch.nn.Conv2d):
            module.channels, module.out_channels = conv.in_channels, conv.out_channels
        if isinstance(module, Attention):
            module.inner_dim = module.to_q.out_features


def _resize(module: torch.nn.Module, shape: dict[str, int], name: str) -> None:
    keys = SHAPE_KEYS.get(type(module))
    if keys is None or set(shape) != set(keys):
        raise InputError(f"{ARCHITECTURE}: layer {name!r} is not a {sorted(shape)} layer of this network")
    for key, value in shape.items():
        setattr(module, key, value)
    if isinstance(module, torch.nn.Conv2d):
        weight = (module.out_channels, module.in_channels // module.groups, *module.kernel_size)
        out = module.out_channels
    elif isinstance(module, torch.nn.Linear):
        weight, out = (module.out_features, module.in_features), module.out_features
    else:
        weight = out = module.num_channels
    if module.weight is not None:
        module.weight = torch.nn.Parameter(torch.empty(weight, dtype=module.weight.dtype))
    if module.bias is not None:
        module.bias = torch.nn.Parameter(torch.empty(out, dtype=module.bias.dtype))


def save_pruned(net: torch.nn.Module, directory: Path) -> None:
    """Write the config, the weights (safetensors) and the per-layer channel counts of a pruned net."""
    directory.mkdir(parents=True, exist_ok=True)
    net.save_config(directory)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, directory / WEIGHTS)
    architecture = {"class": type(net).__name__, "layers": layer_shapes(net)}
    (directory / ARCHITECTURE).write_text(json.dumps(architecture, indent=1))


def refuse_pickles(directory: Path) -> None:
    """A model folder without safetensors weights but with pickled ones is refused, never unpickled."""
    if any(directory.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise InputError(
            f"{directory / pickled[0]}: pickled model weights are refused (they can run code when loaded);"
            " diffattr loads only .safetensors: rebuild this model with the workflow"
        )


def load_pruned(directory: Path) -> torch.nn.Module:
    """Rebuild a pruned net written by `save_pruned`: config, then recorded shapes, then weights."""
    try:
        architecture = json.loads((directory / ARCHITECTURE).read_text())
        cls = CLASSES[architecture["class"]]
        layers = architecture["layers"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError(f"{directory / ARCHITECTURE}: not a pruned architecture ({err})") from None
    refuse_pickles(directory)
    net = cls.from_config(cls.load_config(directory))
    modules = dict(net.named_modules())
    for name, shape in layers.items():
        if name not in modules:
            raise InputError(f"{directory / ARCHITECTURE}: no layer {name!r} in a {cls.__name__}")
        _resize(modules[name], shape, name)
    sync_diffusers_attributes(net)
    try:
        net.load_state_dict(load_file(directory / WEIGHTS), strict=True)
    except (SafetensorError, FileNotFoundError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{directory / WEIGHTS}: not the weights of this pruned model ({first})") from None
    net.diffattr_pruned = True
    return net
