"""EK-FAC: factors by a plain loop, the inverse-vector product against a dense solve, scores against
a dense (G + lambda I)^-1 built from the factors; factors and gradients over the random (t, noise) draws
against a plain autograd loop over the draws reproduced from their documented rule."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffattr import ekfac, gradients
from diffattr.config import validate
from diffattr.ekfac import (
    BASIS_STREAM,
    EIGENVALUE_STREAM,
    TRAIN_STREAM,
    Draws,
    EkfacPreconditioner,
    ekfac_score_grid,
    ekfac_scores,
    factors_from_arrays,
    factors_to_arrays,
    fit_diffusion_ekfac,
    fit_ekfac,
    full_gradients,
    kfac_layers,
    row_blocks,
)
from diffattr.errors import InputError
from diffattr.gradients import FeaturizerSpec, TimestepAveragedGradient, num_parameters
from diffattr.models import PixelDiffusion, build_scheduler, build_unet
from diffattr.outputs import evenly_spaced_timesteps, fixed_noise
from tests.conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]


def _two_layer(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()


def _flat(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    return list(net.parameters())


def test_factors_match_their_definition_by_a_plain_loop():
    # A and S from the first pass's sampled targets, the corrected eigenvalues from the second's
    net = _two_layer()
    x = torch.randn(5, 3, dtype=torch.float64)
    layers = kfac_layers(net, _flat(net))
    assert list(layers) == ["0", "2"]
    z = {stream: torch.randn(5, 2, dtype=torch.float64) for stream in (BASIS_STREAM, EIGENVALUE_STREAM)}
    factors = fit_ekfac(layers, lambda stream: [lambda: (net(x), z[stream])])
    a_sum = {n: 0 for n in layers}
    s_sum = {n: 0 for n in layers}
    per_sample = {n: [] for n in layers}
    for stream in (BASIS_STREAM, EIGENVALUE_STREAM):
        for i in range(5):
            h = x[i : i + 1]
            inputs, outputs = {}, {}
            for name, m in net.named_children():
                if name in layers:
                    inputs[name] = torch.cat([h[0], torch.ones(1, dtype=h.dtype)])
                    h = m(h)
                    h.retain_grad()
                    outputs[name] = h
                else:
                    h = m(h)
            (0.5 * (h - (h.detach() + z[stream][i])).pow(2).sum()).backward()
            for name in layers:
                a, g = inputs[name], outputs[name].grad[0]
                if stream == BASIS_STREAM:
                    a_sum[name] = a_sum[name] + torch.outer(a, a)
                    s_sum[name] = s_sum[name] + torch.outer(g, g)
                else:
                    per_sample[name].append(torch.outer(g, a))
    for name, f in factors.items():
        torch.testing.assert_close(f.a, a_sum[name] / 5)
        torch.testing.assert_close(f.s, s_sum[name] / 5)
        expected = torch.stack([(f.q_s.T @ g @ f.q_a) ** 2 for g in per_sample[name]]).mean(0)
        torch.testing.assert_close(f.eigenvalues, expected)


def test_conv_factors_sum_over_patches():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    z = torch.randn((2, 3, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    factors = fit_ekfac({"c": conv}, lambda stream: [lambda: (conv(x), z)])
    a_sum, s_sum = 0, 0
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for b in range(2):
        for i in range(4):
            for j in range(4):
                a = torch.cat([padded[b, :, i : i + 3, j : j + 3].reshape(-1), torch.ones(1, dtype=x.dtype)])
                g = -z[b, :, i, j]
                a_sum = a_sum + torch.outer(a, a) / 16
                s_sum = s_sum + torch.outer(g, g) / 16
    torch.testing.assert_close(factors["c"].a, a_sum / 2)
    torch.testing.assert_close(factors["c"].s, s_sum / 2)


def test_inverse_vector_product_equals_dense_solve_where_kfac_is_exact():
    # One linear layer, every sample with the same input, both passes with the same sampled targets: the
    # GGN is exactly A (x) S, so its EK-FAC (with the corrected eigenvalues) is the GGN itself and the
    # scores are a dense solve.
    torch.manual_seed(1)
    layer = torch.nn.Linear(3, 2, bias=False).double()
    x = torch.randn(1, 3, dtype=torch.float64).repeat(6, 1)
    z = torch.randn((6, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    factors = fit_ekfac({"l": layer}, lambda stream: [lambda: (layer(x), z)])
    grads = torch.stack([torch.outer(-z[i], x[i]).reshape(-1) for i in range(6)])
    ggn = grads.T @ grads / 6
    pre = EkfacPreconditioner(factors, {"l": layer}, [layer.weight])
    targets, train = torch.randn(2, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    lam = 0.1
    damping = lam * factors["l"].eigenvalues.mean()
    dense = targets @ torch.linalg.solve(ggn + damping * torch.eye(6, dtype=torch.float64), train.T)
    scores = ekfac_scores(pre, targets, [train[:3], train[3:]], [lam])[lam]
    torch.testing.assert_close(torch.from_numpy(scores), dense)


def test_scores_match_a_dense_inverse_built_from_the_factors():
    net = _two_layer(2)
    x = torch.randn(7, 3, dtype=torch.float64)
    params = _flat(net)
    layers = kfac_layers(net, params)
    z = torch.randn(7, 2, dtype=torch.float64)
    factors = fit_ekfac(layers, lambda stream: [lambda: (net(x[:4]), z[:4]), lambda: (net(x[4:]), z[4:])])
    pre = EkfacPreconditioner(factors, layers, params)
    blocks = []
    for lam_layer in factors.values():
        q = torch.kron(lam_layer.q_s, lam_layer.q_a)
        blocks.append((q, lam_layer.eigenvalues.reshape(-1)))
    p = sum(x.numel() for x in params)
    targets, train = torch.randn(3, p, dtype=torch.float64), torch.randn(5, p, dtype=torch.float64)

    def to_blocks(flat: torch.Tensor) -> torch.Tensor:  # (N, P) -> per layer [weight | bias] rows
        out, start = [], 0
        for m in layers.values():
            w = flat[:, start : start + m.weight.numel()].reshape(len(flat), *m.weight.shape)
            b = flat[:, start + m.weight.numel() : start + m.weight.numel() + m.bias.numel()]
            out.append(torch.cat([w, b[..., None]], dim=2).reshape(len(flat), -1))
            start += m.weight.numel() + m.bias.numel()
        return torch.cat(out, dim=1)

    for lam in (0.01, 1.0):
        dense = torch.block_diag(*[q @ torch.diag(e + lam * e.mean()) @ q.T for q, e in blocks])
        expected = to_blocks(targets) @ torch.linalg.solve(dense, to_blocks(train).T)
        got = ekfac_scores(pre, targets, [train], [lam])[lam]
        torch.testing.assert_close(torch.from_numpy(got), expected)


def test_diffusion_factors_on_a_tiny_unet_at_the_featurizers_fixed_timesteps(tiny_model, tiny_images):
    spec = FeaturizerSpec("loss", timesteps=3, dim=8, projection="gaussian", seed=0)
    factors = fit_diffusion_ekfac(tiny_model, tiny_images, spec, noise_seed=0, draws=None)
    layers = kfac_layers(tiny_model.unet, tiny_model.trainable_parameters())
    assert set(factors) == set(layers) and "conv_in" in factors
    # conv_in sees x_t itself: its A is the mean over images x timesteps of the unfolded patches.
    ts = evenly_spaced_timesteps(3, 1000)
    a_sum = 0
    for t in ts:
        noise = fixed_noise(0, t, (1, 8, 8)).expand(len(tiny_images), -1, -1, -1)
        x_t = tiny_model.add_noise(tiny_images, noise, torch.full((len(tiny_images),), int(t)))
        patches = torch.nn.functional.unfold(x_t, 3, padding=1).transpose(1, 2).double()
        patches = torch.cat([patches, torch.ones_like(patches[..., :1])], dim=2)
        a_sum = a_sum + torch.einsum("bli,blj->ij", patches, patches) / patches.shape[1]
    # the patches come from float32 x_t on both sides, summed in another order: float32 tolerances
    torch.testing.assert_close(factors["conv_in"].a, a_sum / (3 * len(tiny_images)), rtol=1e-5, atol=1e-6)
    # Stored and read back, the factors score like the fitted ones; scores are finite.
    restored = factors_from_arrays(factors_to_arrays(factors))
    params = tiny_model.trainable_parameters()
    fixed = Draws.of(tiny_model, spec, 0, None)
    grads = torch.cat(list(full_gradients(tiny_model, tiny_images, spec, fixed, TRAIN_STREAM)))
    direct = TimestepAveragedGradient(tiny_model, spec, 0)
    torch.testing.assert_close(grads[1], direct(tiny_images[1]), rtol=1e-4, atol=1e-6)
    a = ekfac_scores(EkfacPreconditioner(factors, layers, params), grads[:2], [grads], [0.1])[0.1]
    b = ekfac_scores(EkfacPreconditioner(restored, layers, params), grads[:2], [grads], [0.1])[0.1]
    assert a.shape == (2, 6) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)


@pytest.mark.parametrize("draws", [None, 3])
def test_score_grid_in_target_and_train_blocks_equals_one_pass(tiny_model, tiny_images, monkeypatch, draws):
    # with random draws, each target keeps its own draws in whichever chunk it is scored
    spec = FeaturizerSpec("squared_norm", timesteps=2, dim=8, projection="gaussian", seed=0)
    factors = fit_diffusion_ekfac(tiny_model, tiny_images, spec, noise_seed=0, draws=draws)
    grid = [0.1, 1.0]
    whole = ekfac_score_grid(tiny_model, factors, tiny_images, tiny_images[:3], spec, 0, draws, grid)
    monkeypatch.setattr(ekfac, "MAX_TARGET_ENTRIES", 2 * num_parameters(tiny_model))
    chunked = ekfac_score_grid(tiny_model, factors, tiny_images, tiny_images[:3], spec, 0, draws, grid)
    for lam in (0.1, 1.0):
        assert whole[lam].shape == (3, 6)
        np.testing.assert_allclose(chunked[lam], whole[lam], rtol=1e-5, atol=1e-8)


def test_row_blocks_regroup_rows_in_order():
    chunks = [torch.arange(n * 2.0).reshape(n, 2) + 10 * n for n in (1, 3, 2)]
    blocks = list(row_blocks(iter(chunks), 4))
    assert [len(b) for b in blocks] == [4, 2]
    assert torch.equal(torch.cat(blocks), torch.cat(chunks))
    assert [len(b) for b in row_blocks(iter(chunks), 1)] == [1] * 6


SMALL_UNET = {**TINY_MODEL, "block_out_channels": [4, 4], "norm_num_groups": 2, "attention_head_dim": 2}
SMALL_SHAPE = (3, 4, 4)


@pytest.fixture
def small_model() -> PixelDiffusion:
    """A 4.7k-parameter UNet on 3x4x4 images: a plain autograd loop over each draw takes milliseconds."""
    torch.manual_seed(0)
    return PixelDiffusion(
        unet=build_unet(SMALL_UNET, sample_size=4, channels=3),
        scheduler=build_scheduler({"num_train_timesteps": 1000, "beta_schedule": "linear"}),
    )


@pytest.fixture
def small_images() -> torch.Tensor:
    return torch.rand(5, *SMALL_SHAPE, generator=torch.Generator().manual_seed(2)) * 2 - 1


def _documented_draws(
    noise_seed: int, stream: int, index: int, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The draw rule as diffattr.ekfac.sample_draws documents it: t, noise, z from a generator seeded
    with SeedSequence((noise_seed, stream, index)), for 1000 training timesteps."""
    seed = int(np.random.SeedSequence((noise_seed, stream, index)).generate_state(1, np.uint64)[0])
    generator = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 1000, (count,), generator=generator)
    noise = torch.randn((count, *SMALL_SHAPE), generator=generator)
    return t, noise, torch.randn((count, *SMALL_SHAPE), generator=generator)


def _noised(model: PixelDiffusion, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, from the scheduler's abar."""
    abar = model.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def test_random_draw_factors_match_a_plain_autograd_loop_over_the_documented_draws(small_model, small_images):
    # First pass: conv_in's A from the unfolded patches of x_t, conv_out's S from z alone (the gradient
    # of 0.5 ||pred - (pred + z)||^2 at the output is -z). Second pass, on draws of its own: every
    # layer's corrected eigenvalues from per-draw weight gradients by torch.autograd.
    spec = FeaturizerSpec("loss", timesteps=10, dim=8, projection="gaussian", seed=0)
    factors = fit_diffusion_ekfac(small_model, small_images, spec, noise_seed=7, draws=3)
    unet = small_model.unet
    layers = kfac_layers(unet, small_model.trainable_parameters())
    a_in = s_out = 0
    eigenvalues = dict.fromkeys(layers, 0)
    rows = len(small_images) * 3
    for i, x0 in enumerate(small_images):
        t, noise, z = _documented_draws(7, BASIS_STREAM, i, 3)
        x_t = _noised(small_model, x0[None], noise, t)
        patches = torch.nn.functional.unfold(x_t, 3, padding=1).transpose(1, 2).double()
        patches = torch.cat([patches, torch.ones_like(patches[..., :1])], dim=2)
        a_in = a_in + torch.einsum("bli,blj->ij", patches, patches) / 16
        per_position = z.flatten(2).transpose(1, 2).double()
        s_out = s_out + torch.einsum("bli,blj->ij", per_position, per_position) / 16
        t, noise, z = _documented_draws(7, EIGENVALUE_STREAM, i, 3)
        x_t = _noised(small_model, x0[None], noise, t)
        for k in range(3):
            pred = unet(x_t[k : k + 1], t[k : k + 1]).sample
            loss = 0.5 * (pred - (pred.detach() + z[k : k + 1])).pow(2).sum()
            for name, m in layers.items():
                weight, bias = torch.autograd.grad(loss, [m.weight, m.bias], retain_graph=True)
                g = torch.cat([weight.reshape(len(weight), -1), bias[:, None]], dim=1).double()
                f = factors[name]
                eigenvalues[name] = eigenvalues[name] + (f.q_s.T @ g @ f.q_a) ** 2
    torch.testing.assert_close(factors["conv_in"].a, a_in / rows, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(factors["conv_out"].s, s_out / rows, rtol=1e-5, atol=1e-6)
    for name, f in factors.items():
        expected = eigenvalues[name] / rows
        torch.testing.assert_close(f.eigenvalues, expected, rtol=1e-3, atol=1e-6 * expected.max().item())


@pytest.mark.parametrize("vmapped", [True, False], ids=["vmap", "one-by-one"])
def test_random_draw_gradients_match_a_plain_autograd_loop(small_model, small_images, monkeypatch, vmapped):
    if not vmapped:  # one image per backward, the path of conditional families
        monkeypatch.setattr(gradients, "SAMPLE_TIMESTEPS", 1)
    spec = FeaturizerSpec("loss", timesteps=10, dim=8, projection="gaussian", seed=0)
    draws = Draws.of(small_model, spec, 7, 4)
    got = torch.cat(list(full_gradients(small_model, small_images, spec, draws, TRAIN_STREAM)))
    params = small_model.trainable_parameters()
    for i, x0 in enumerate(small_images):
        t, noise, _ = _documented_draws(7, TRAIN_STREAM, i, 4)
        pred = small_model.unet(_noised(small_model, x0[None], noise, t), t).sample
        loss = (pred - noise).pow(2).flatten(1).mean(1).mean()
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        torch.testing.assert_close(got[i], expected, rtol=1e-4, atol=1e-7)
    # image i keeps its draws when it comes at another position (a later chunk of targets); a vmap over
    # fewer images rounds otherwise in float32
    later = torch.cat(
        list(full_gradients(small_model, small_images[2:], spec, draws, TRAIN_STREAM, offset=2))
    )
    torch.testing.assert_close(later, got[2:], rtol=1e-4, atol=1e-6 * got.abs().max().item())


def test_random_draws_are_deterministic_and_independent_of_the_batch_split(
    small_model, small_images, monkeypatch
):
    spec = FeaturizerSpec("loss", timesteps=10, dim=8, projection="gaussian", seed=0)
    first = fit_diffusion_ekfac(small_model, small_images, spec, noise_seed=7, draws=3)
    again = fit_diffusion_ekfac(small_model, small_images, spec, noise_seed=7, draws=3)
    other_seed = fit_diffusion_ekfac(small_model, small_images, spec, noise_seed=8, draws=3)
    # one image per forward, its 3 draws in forwards of 2 and 1
    monkeypatch.setattr(ekfac, "FIT_BATCH", 2)
    split = fit_diffusion_ekfac(small_model, small_images, spec, noise_seed=7, draws=3)
    for name, f in first.items():
        for key in ("a", "s", "q_a", "q_s", "eigenvalues"):
            assert torch.equal(getattr(f, key), getattr(again[name], key)), (name, key)
        # The same draws, summed in float32 over other forwards: A and S equal up to float32 rounding, and
        # so the second pass's mean ||G_i||_F^2 (the corrected eigenvalues' sum, whatever the eigenbasis:
        # within A's numerically degenerate eigenspaces the basis itself is arbitrary).
        for key in ("a", "s"):
            expected = getattr(f, key)
            # float32 sums of a few hundred terms in another order: ~1e-5 of the largest entry
            atol = 1e-5 * expected.abs().max().item()
            torch.testing.assert_close(getattr(split[name], key), expected, rtol=1e-5, atol=atol)
        torch.testing.assert_close(split[name].eigenvalues.sum(), f.eigenvalues.sum(), rtol=1e-5, atol=0)
    assert not torch.allclose(other_seed["conv_in"].a, first["conv_in"].a)


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"kind": "ekfac", "featurizer": "das"}, "featurizers.das.normalize_timesteps"),
        ({"kind": "ekfac", "featurizer": "nope"}, "methods.E.featurizer"),
        ({"kind": "ekfac", "featurizer": "tracin", "draws": {"factors": 0}}, "methods.E.draws.factors"),
        ({"kind": "ekfac", "featurizer": "tracin", "draws": {"gradients": "K"}}, "methods.E.draws.gradients"),
    ],
)
def test_ekfac_config_errors_name_the_key(method, message):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["methods"]["E"] = method
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        validate(config)
