"""EK-FAC influence for diffusion (Mlodozeniec et al., ICLR 2025): per-layer Kronecker factors of the
diffusion loss's GGN, eigenvalue-corrected, and score = g_target^T (G + lambda I)^-1 g_train, the GGN and
the gradients each an average over random (t, noise) draws per sample."""

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
# Sample-draws per forward pass when fitting the factors; target gradient entries held while scoring.
FIT_BATCH, MAX_TARGET_ENTRIES = 256, 2**27
# One image's draws go through the network at most this many at a time (a CIFAR training batch), the
# gradient accumulated over the chunks: the paper's 250 draws of the 35.7M UNet in one batch may not fit.
DRAWS_PER_FORWARD = 128
# The streams of per-sample draws, independent of each other: the factors' first pass (A, S and their
# eigenbases), their second pass (the corrected eigenvalues), the train and the target gradients.
BASIS_STREAM, EIGENVALUE_STREAM, TRAIN_STREAM, TARGET_STREAM = range(4)
# The config's draws value for the featurizer's K evenly spaced timesteps and fixed noise.
FIXED = "fixed"


def draw_count(value: int | str) -> int | None:
    """A config draws value as a count of random draws per sample; None for 'fixed'."""
    return None if value == FIXED else int(value)


def sample_draws(
    noise_seed: int, stream: int, index: int, count: int, num_train_timesteps: int, shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample `index`'s `count` draws in `stream`: t (count,), noise (count, *shape) and the GGN's sampled
    targets z (count, *shape), drawn in this order by randint(0, num_train_timesteps), randn, randn from a
    torch.Generator seeded with np.random.SeedSequence((noise_seed, stream, index)).generate_state(1,
    np.uint64)[0]: a sample's draws depend on neither its batch nor the other samples."""
    seed = int(np.random.SeedSequence((noise_seed, stream, index)).generate_state(1, np.uint64)[0])
    generator = torch.Generator().manual_seed(seed)
    t = torch.randint(0, num_train_timesteps, (count,), generator=generator)
    noise = torch.randn((count, *shape), generator=generator)
    return t, noise, torch.randn((count, *shape), generator=generator)


@dataclass(frozen=True)
class Draws:
    """Each sample's (t, noise) pairs and z: `count` random draws per sample (sample_draws), or with
    `fixed` the featurizer's K timesteps and their fixed noise, shared by every sample (z still drawn)."""

    noise_seed: int
    count: int
    num_train_timesteps: int
    shape: tuple[int, ...]
    fixed: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def of(cls, model: DiffusionModel, spec: FeaturizerSpec, noise_seed: int, count: int | None) -> Draws:
        """`count` random draws per sample, or the featurizer's K fixed ones when `count` is None."""
        num_train, shape = model.scheduler.config.num_train_timesteps, tuple(model.latent_shape)
        if count is not None:
            return cls(noise_seed, count, num_train, shape)
        shared = TimestepAveragedGradient(model, spec, noise_seed)
        return cls(noise_seed, len(shared.timesteps), num_train, shape, (shared.timesteps, shared.noise))

    def __call__(self, stream: int, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample `index`'s (t, noise, z) in `stream`."""
        t, noise, z = sample_draws(
            self.noise_seed, stream, index, self.count, self.num_train_timesteps, self.shape
        )
        return (t, noise, z) if self.fixed is None else (*self.fixed, z)


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


def _sampled_backward(pred: torch.Tensor, z: torch.Tensor) -> None:
    """Backpropagate 0.5 ||pred - (pred.detach() + z)||^2 with z ~ N(0, I) given: targets from the model's
    predictive, so E[g g^T] is the GGN of the Gaussian noise-prediction loss."""
    (0.5 * (pred - (pred.detach() + z.to(pred.device, pred.dtype))).pow(2).sum()).backward()


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
    batches: Callable[[int], Iterable[Callable[[], tuple[torch.Tensor, torch.Tensor]]]],
) -> dict[str, LayerFactors]:
    """EK-FAC of the GGN over the elements of `batches(stream)`, each a closure returning a prediction
    (B, ...) and its sampled targets z (B, ...).

    Pass 1 over batches(BASIS_STREAM): A = mean over elements of sum over positions a a^T / L, S = mean of
    sum g g^T / L. Pass 2 over batches(EIGENVALUE_STREAM), as many elements: the eigenvalues in the
    eigenbasis of A and S re-estimated as mean (Q_S^T G_i Q_A)^2 of each element's gradient
    G_i = sum over positions g a^T (George et al. 2018).
    """
    factors: dict[str, LayerFactors] = {}
    count = 0
    rec = _Recorder(layers)
    try:
        for forward in batches(BASIS_STREAM):
            _sampled_backward(*forward())
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
        for forward in batches(EIGENVALUE_STREAM):
            _sampled_backward(*forward())
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
    draws: Draws,
    captions: Sequence[str] | None = None,
) -> Callable[[int], Iterator[Callable[[], tuple[torch.Tensor, torch.Tensor]]]]:
    """For a stream, closures returning the predicted noise of the training images at their draws and
    the draws' z, FIT_BATCH sample-draws per forward (a sample's draws beyond FIT_BATCH in further ones)."""
    per_batch = max(1, FIT_BATCH // draws.count)
    cond_of = conditioner(model, captions)

    def forward(idx: range, stream: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = [draws(stream, i) for i in idx]
        t, noise, z = (torch.cat([d[j][rows] for d in drawn]).to(model.device) for j in range(3))
        per_sample = len(t) // len(idx)
        with torch.no_grad():
            x0 = model.encode(images[idx.start : idx.stop].to(model.device))
        x_t = model.add_noise(x0.repeat_interleave(per_sample, 0), noise, t)
        cond = cond_of(torch.arange(idx.start, idx.stop).repeat_interleave(per_sample))
        return model.predict_noise(x_t, t, cond), z

    def batches(stream: int) -> Iterator[Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
        for start in range(0, len(images), per_batch):
            idx = range(start, min(start + per_batch, len(images)))
            for first in range(0, draws.count, FIT_BATCH):
                rows = slice(first, first + FIT_BATCH)
                yield lambda idx=idx, rows=rows: forward(idx, stream, rows)

    return batches


def fit_diffusion_ekfac(
    model: DiffusionModel,
    images: torch.Tensor,
    spec: FeaturizerSpec,
    noise_seed: int,
    draws: int | None,
    captions: Sequence[str] | None = None,
) -> dict[str, LayerFactors]:
    """EK-FAC of a diffusion model's GGN over its training images x `draws` random (t, noise) draws per
    image and pass (None: the featurizer's K timesteps and fixed noise)."""
    model.unet.eval()
    layers = kfac_layers(model.unet, model.trainable_parameters())
    if not layers:
        raise InputError("EK-FAC: the model has no trainable Linear or Conv2d layer")
    rule = Draws.of(model, spec, noise_seed, draws)
    factors = fit_ekfac(layers, diffusion_batches(model, images, rule, captions))
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
    draws: Draws,
    stream: int,
    offset: int = 0,
    captions: Sequence[str] | None = None,
) -> Iterator[torch.Tensor]:
    """Unprojected gradients (B, P) of the featurizer's output averaged over each image's draws in
    `stream` (image i is sample offset + i), a batch at a time."""
    model.unet.eval()
    gradient = TimestepAveragedGradient(
        model, replace(spec, timesteps=draws.count), draws.noise_seed, timestep_batch=DRAWS_PER_FORWARD
    )
    step = gradient.samples
    for start in range(0, len(images), step):
        stop = min(start + step, len(images))
        drawn = [draws(stream, offset + i) for i in range(start, stop)]
        if step > 1:
            t, noise = torch.stack([d[0] for d in drawn]), torch.stack([d[1] for d in drawn])
            with torch.no_grad():
                x0 = model.encode(images[start:stop].to(model.device))
            x_t = model.add_noise(
                x0.repeat_interleave(draws.count, 0),
                noise.flatten(0, 1).to(x0.device),
                t.flatten().to(x0.device),
            )
            yield gradient.given(x_t.view(noise.shape), noise, t).detach()
        else:
            yield torch.stack(
                [
                    gradient.drawn(images[i], t, noise, None if captions is None else captions[i])
                    for i, (t, noise, _) in zip(range(start, stop), drawn, strict=True)
                ]
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
    draws: int | None,
    lambda_grid: Sequence[float],
    train_captions: Sequence[str] | None = None,
    target_captions: Sequence[str] | None = None,
) -> dict[float, np.ndarray]:
    """EK-FAC scores (T, N) for every damping: targets' gradients of the featurizer's output, train
    images' gradients of the loss, each averaged over `draws` random (t, noise) draws of its own (None:
    the featurizer's K timesteps and fixed noise)."""
    params = model.trainable_parameters()
    preconditioner = EkfacPreconditioner(factors, kfac_layers(model.unet, params), params)
    loss_spec = replace(spec, output="loss")
    rule = Draws.of(model, spec, noise_seed, draws)
    # Targets a chunk at a time, so that their gradients hold at most MAX_TARGET_ENTRIES; the train
    # gradients are recomputed for each chunk (once on the demo) and rotated in blocks of the same size.
    step = max(1, MAX_TARGET_ENTRIES // max(1, sum(p.numel() for p in params)))
    parts = []
    for start in range(0, len(targets), step):
        captions = None if target_captions is None else target_captions[start : start + step]
        rows = full_gradients(
            model, targets[start : start + step], spec, rule, TARGET_STREAM, start, captions
        )
        chunk = torch.cat(list(rows))
        train_grads = full_gradients(model, train, loss_spec, rule, TRAIN_STREAM, captions=train_captions)
        parts.append(ekfac_scores(preconditioner, chunk, row_blocks(train_grads, step), lambda_grid))
    return {lam: np.concatenate([part[lam] for part in parts]) for lam in lambda_grid}
