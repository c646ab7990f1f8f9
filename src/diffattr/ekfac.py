"""EK-FAC influence for diffusion (Mlodozeniec et al., ICLR 2025): per-layer Kronecker factors of the
diffusion loss's GGN, eigenvalue-corrected, and score = g_target^T (G + lambda I)^-1 g_train."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from diffattr.errors import InputError
from diffattr.families.base import DiffusionModel, conditioner
from diffattr.gradients import FeaturizerSpec, TimestepAveragedGradient

log = logging.getLogger(__name__)
# Sample-timesteps per forward pass when fitting the factors; target gradient entries held while scoring.
FIT_BATCH, MAX_TARGET_ENTRIES = 256, 2**27


def kfac_layers(network: torch.nn.Module, params: Sequence[torch.nn.Parameter]) -> dict[str, torch.nn.Module]:
    """The Linear and (ungrouped, zero-padded) Conv2d layers of `network` whose weight is in `params`."""
    ids = {id(p) for p in params}
    layers = {}
    for name, m in network.named_modules():
        if isinstance(m, torch.nn.Linear) or (
            isinstance(m, torch.nn.Conv2d)
            and m.groups == 1
            and m.padding_mode == "zeros"
            and not isinstance(m.padding, str)
        ):
            if id(m.weight) in ids:
                layers[name] = m
    return layers


def _has_bias(m: torch.nn.Module) -> bool:
    return m.bias is not None


def layer_inputs(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as (B, L, in) rows, one per position (conv: unfolded patches), 1 for the bias."""
    if isinstance(m, torch.nn.Conv2d):
        rows = torch.nn.functional.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride).transpose(1, 2)
    else:
        rows = x.reshape(x.shape[0], -1, x.shape[-1])
    if _has_bias(m):
        rows = torch.cat([rows, torch.ones_like(rows[..., :1])], dim=-1)
    return rows


def layer_output_grads(m: torch.nn.Module, g: torch.Tensor) -> torch.Tensor:
    """The gradient w.r.t. a layer's output as (B, L, out) rows, one per position."""
    if isinstance(m, torch.nn.Conv2d):
        return g.flatten(2).transpose(1, 2)
    return g.reshape(g.shape[0], -1, g.shape[-1])


class _Recorder:
    """Forward/backward hooks keeping each layer's input rows and output-gradient rows of one batch."""

    def __init__(self, layers: dict[str, torch.nn.Module]) -> None:
        self.layers, self.a, self.g, self.handles = layers, {}, {}, []
        for name, m in layers.items():
            self.handles.append(m.register_forward_hook(self._forward(name)))

    def _forward(self, name: str) -> Callable:
        def hook(m: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self.a[name] = layer_inputs(m, inputs[0].detach())
            if output.requires_grad:
                output.register_hook(lambda grad: self.g.__setitem__(name, layer_output_grads(m, grad)))

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _sampled_backward(pred: torch.Tensor, generator: torch.Generator) -> None:
    """Backpropagate 0.5 ||pred - (pred.detach() + z)||^2, z ~ N(0, I): targets from the model's
    predictive, so E[g g^T] is the GGN of the Gaussian noise-prediction loss."""
    z = torch.randn(pred.shape, generator=generator, dtype=pred.dtype).to(pred.device)
    (0.5 * (pred - (pred.detach() + z)).pow(2).sum()).backward()


@dataclass
class LayerFactors:
    """One layer's K-FAC factors, their eigenvectors and the corrected eigenvalues (out, in)."""

    a: torch.Tensor
    s: torch.Tensor
    q_a: torch.Tensor | None = None
    q_s: torch.Tensor | None = None
    eigenvalues: torch.Tensor | None = None


def fit_ekfac(
    layers: dict[str, torch.nn.Module],
    batches: Callable[[], Iterable[Callable[[], torch.Tensor]]],
    seed: int = 0,
) -> dict[str, LayerFactors]:
    """EK-FAC of the GGN over the elements of `batches()` (each a closure returning a prediction (B, ...)).

    Pass 1: A = mean over elements of sum over positions a a^T / L, S = mean of sum g g^T / L.
    Pass 2: the eigenvalues in the eigenbasis of A and S re-estimated as mean (Q_S^T G_i Q_A)^2 of
    each element's gradient G_i = sum over positions g a^T (George et al. 2018).
    The sampled targets are drawn from a generator seeded with `seed`, the same in both passes.
    """
    factors: dict[str, LayerFactors] = {}
    count = 0
    rec = _Recorder(layers)
    try:
        gen = torch.Generator().manual_seed(seed)
        for forward in batches():
            _sampled_backward(forward(), gen)
            for name in layers:
                a, g = rec.a[name], rec.g[name]  # products in the model's dtype, sums in float64
                positions = a.shape[1]
                a_sum = torch.einsum("bli,blj->ij", a, a).double() / positions
                s_sum = torch.einsum("bli,blj->ij", g, g).double() / positions
                if name in factors:
                    factors[name].a += a_sum
                    factors[name].s += s_sum
                else:
                    factors[name] = LayerFactors(a_sum, s_sum)
            count += len(rec.a[next(iter(layers))])
            rec.a.clear(), rec.g.clear()
        if count == 0:
            raise InputError("EK-FAC: no training elements to fit the factors on")
        for f in factors.values():
            f.a, f.s = f.a / count, f.s / count
            f.q_a = torch.linalg.eigh(f.a).eigenvectors
            f.q_s = torch.linalg.eigh(f.s).eigenvectors
            f.eigenvalues = torch.zeros(f.q_s.shape[0], f.q_a.shape[0], dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed)
        for forward in batches():
            _sampled_backward(forward(), gen)
            for name, f in factors.items():
                a, g = rec.a[name], rec.g[name]
                per_element = torch.einsum("blo,bli->boi", g, a)
                rotated = f.q_s.T.to(a.dtype) @ per_element @ f.q_a.to(a.dtype)
                f.eigenvalues += rotated.pow(2).sum(0).double()
            rec.a.clear(), rec.g.clear()
        for f in factors.values():
            f.eigenvalues /= count
    finally:
        rec.remove()
    return factors


def diffusion_batches(
    model: DiffusionModel,
    images: torch.Tensor,
    spec: FeaturizerSpec,
    noise_seed: int,
    captions: Sequence[str] | None = None,
) -> Callable[[], Iterator[Callable[[], torch.Tensor]]]:
    """Closures predicting the noise of training images at the featurizer's K timesteps and fixed noise
    (the timesteps and noise of diffattr.gradients), FIT_BATCH sample-timesteps at a time."""
    shared = TimestepAveragedGradient(model, spec, noise_seed)
    timesteps, noise = shared.timesteps.to(model.device), shared.noise.to(model.device)
    k = len(timesteps)
    per_batch = max(1, FIT_BATCH // k)
    cond_of = conditioner(model, captions)

    def forward(idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x0 = model.encode(images[idx].to(model.device))
        b = len(x0)
        x_t = model.add_noise(
            x0.repeat_interleave(k, 0), noise.repeat(b, *[1] * (noise.dim() - 1)), timesteps.repeat(b)
        )
        cond = cond_of(idx.repeat_interleave(k))
        return model.predict_noise(x_t, timesteps.repeat(b), cond)

    def batches() -> Iterator[Callable[[], torch.Tensor]]:
        for start in range(0, len(images), per_batch):
            idx = torch.arange(start, min(start + per_batch, len(images)))
            yield lambda idx=idx: forward(idx)

    return batches


def fit_diffusion_ekfac(
    model: DiffusionModel,
    images: torch.Tensor,
    spec: FeaturizerSpec,
    noise_seed: int,
    seed: int = 0,
    captions: Sequence[str] | None = None,
) -> dict[str, LayerFactors]:
    """EK-FAC of a diffusion model's GGN over its training images x the featurizer's timesteps."""
    model.unet.eval()
    layers = kfac_layers(model.unet, model.trainable_parameters())
    if not layers:
        raise InputError("EK-FAC: the model has no trainable Linear or Conv2d layer")
    factors = fit_ekfac(layers, diffusion_batches(model, images, spec, noise_seed, captions), seed)
    for p in model.trainable_parameters():
        p.grad = None
    return factors


def factors_to_arrays(factors: dict[str, LayerFactors]) -> dict[str, np.ndarray]:
    """Flat arrays for an .npz file: layer names and each layer's q_a, q_s and corrected eigenvalues."""
    arrays: dict[str, np.ndarray] = {"layers": np.array(list(factors), dtype=str)}
    for i, f in enumerate(factors.values()):
        arrays.update({f"q_a{i}": f.q_a.numpy(), f"q_s{i}": f.q_s.numpy(), f"eig{i}": f.eigenvalues.numpy()})
    return arrays


def factors_from_arrays(arrays: dict[str, np.ndarray]) -> dict[str, LayerFactors]:
    """The inverse of factors_to_arrays (without A and S themselves, which scoring does not need)."""
    factors = {}
    for i, name in enumerate(arrays["layers"].tolist()):
        q_a, q_s = torch.from_numpy(arrays[f"q_a{i}"]), torch.from_numpy(arrays[f"q_s{i}"])
        factors[name] = LayerFactors(None, None, q_a, q_s, torch.from_numpy(arrays[f"eig{i}"]))
    return factors


class EkfacPreconditioner:
    """Rotates flat parameter gradients into each layer's Kronecker eigenbasis and divides by the
    corrected eigenvalues + damping; damping = lambda_rel * the layer's mean corrected eigenvalue."""

    def __init__(
        self,
        factors: dict[str, LayerFactors],
        layers: dict[str, torch.nn.Module],
        params: Sequence[torch.nn.Parameter],
    ) -> None:
        offsets, start = {}, 0
        for p in params:
            offsets[id(p)] = start
            start += p.numel()
        missing = sorted(set(layers) ^ set(factors))
        if missing:
            raise InputError(f"EK-FAC factors do not match the model's layers: {missing[:5]}")
        self.blocks = []
        for name, m in layers.items():
            f = factors[name]
            w = (offsets[id(m.weight)], m.weight.shape[0], m.weight[0].numel())
            b = offsets[id(m.bias)] if _has_bias(m) and id(m.bias) in offsets else None
            self.blocks.append((w, b, _has_bias(m), f))
        self.eigenvalues = torch.cat([f.eigenvalues.reshape(-1) for *_, f in self.blocks])
        self.layer_means = torch.cat(
            [f.eigenvalues.mean().expand(f.eigenvalues.numel()) for *_, f in self.blocks]
        )

    def rotate(self, grads: torch.Tensor) -> torch.Tensor:
        """(N, P) flat gradients -> (N, P') their layer blocks Q_S^T G Q_A, flattened and concatenated."""
        grads = grads.double()
        out = []
        for (start, rows, cols), bias, has_bias, f in self.blocks:
            g = grads[:, start : start + rows * cols].reshape(-1, rows, cols)
            if has_bias:
                col = grads[:, bias : bias + rows, None] if bias is not None else torch.zeros_like(g[..., :1])
                g = torch.cat([g, col], dim=2)
            out.append((f.q_s.T @ g @ f.q_a).reshape(len(grads), -1))
        return torch.cat(out, dim=1)

    def denominators(self, lambda_rel: float) -> torch.Tensor:
        """The corrected eigenvalues plus each layer's damping, (P',)."""
        return self.eigenvalues + lambda_rel * self.layer_means


def ekfac_scores(
    preconditioner: EkfacPreconditioner,
    targets: torch.Tensor,
    train_chunks: Iterable[torch.Tensor],
    lambda_grid: Sequence[float],
) -> dict[float, np.ndarray]:
    """g_target^T (G_ekfac + lambda I)^-1 g_train for every lambda of the grid: {lambda: (T, N)}.

    `targets` (T, P) are rotated once; the train gradients come in chunks (N_c, P), rotated as they come.
    """
    rotated_targets = preconditioner.rotate(targets)
    parts: dict[float, list[torch.Tensor]] = {lam: [] for lam in lambda_grid}
    for chunk in train_chunks:
        rotated = preconditioner.rotate(chunk)
        for lam in lambda_grid:
            parts[lam].append(rotated_targets @ (rotated / preconditioner.denominators(lam)).T)
    return {lam: torch.cat(p, dim=1).numpy() for lam, p in parts.items()}


def full_gradients(
    model: DiffusionModel,
    images: torch.Tensor,
    spec: FeaturizerSpec,
    noise_seed: int,
    captions: Sequence[str] | None = None,
) -> Iterator[torch.Tensor]:
    """Unprojected timestep-averaged gradients (B, P) of the featurizer's output, a batch at a time."""
    model.unet.eval()
    gradient = TimestepAveragedGradient(model, spec, noise_seed)
    step = gradient.samples
    for start in range(0, len(images), step):
        stop = min(start + step, len(images))
        if step > 1:
            yield gradient.batch(images[start:stop]).detach()
        else:
            yield torch.stack(
                [gradient(images[i], None if captions is None else captions[i]) for i in range(start, stop)]
            )


def row_blocks(chunks: Iterable[torch.Tensor], rows: int) -> Iterator[torch.Tensor]:
    """The rows of `chunks` (N_c, P), in order, regrouped into blocks of `rows` (the last may be
    shorter): rotating and dividing a block costs about what one row does when P is large."""
    pending: list[torch.Tensor] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        while held >= rows:
            block = torch.cat(pending)
            yield block[:rows]
            pending, held = [block[rows:]], held - rows
    if held:
        yield torch.cat(pending)


def ekfac_score_grid(
    model: DiffusionModel,
    factors: dict[str, LayerFactors],
    train: torch.Tensor,
    targets: torch.Tensor,
    spec: FeaturizerSpec,
    noise_seed: int,
    lambda_grid: Sequence[float],
    train_captions: Sequence[str] | None = None,
    target_captions: Sequence[str] | None = None,
) -> dict[float, np.ndarray]:
    """EK-FAC scores (T, N) for every damping: targets' gradients of the featurizer's output, train
    images' gradients of the loss, both averaged over its K timesteps and fixed noise."""
    params = model.trainable_parameters()
    preconditioner = EkfacPreconditioner(factors, kfac_layers(model.unet, params), params)
    loss_spec = replace(spec, output="loss")
    # Targets a chunk at a time, so that their gradients hold at most MAX_TARGET_ENTRIES; the train
    # gradients are recomputed for each chunk (once on the demo) and rotated in blocks of the same size.
    step = max(1, MAX_TARGET_ENTRIES // max(1, sum(p.numel() for p in params)))
    parts = []
    for start in range(0, len(targets), step):
        captions = None if target_captions is None else target_captions[start : start + step]
        rows = full_gradients(model, targets[start : start + step], spec, noise_seed, captions)
        chunk = torch.cat(list(rows))
        train_grads = row_blocks(full_gradients(model, train, loss_spec, noise_seed, train_captions), step)
        parts.append(ekfac_scores(preconditioner, chunk, train_grads, lambda_grid))
    return {lam: np.concatenate([part[lam] for part in parts]) for lam in lambda_grid}
