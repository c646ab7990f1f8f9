"""EK-FAC: factors by a plain loop, the inverse-vector product against a dense solve, scores against
a dense (G + lambda I)^-1 built from the factors."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffattr import ekfac
from diffattr.config import validate
from diffattr.ekfac import (
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
from diffattr.outputs import evenly_spaced_timesteps, fixed_noise

ROOT = Path(__file__).resolve().parents[1]


def _two_layer(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()


def _flat(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    return list(net.parameters())


def test_factors_match_their_definition_by_a_plain_loop():
    net = _two_layer()
    x = torch.randn(5, 3, dtype=torch.float64)
    layers = kfac_layers(net, _flat(net))
    assert list(layers) == ["0", "2"]
    factors = fit_ekfac(layers, lambda: [lambda: net(x)], seed=3)
    z = torch.randn((5, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a_sum = {n: 0 for n in layers}
    s_sum = {n: 0 for n in layers}
    per_sample = {n: [] for n in layers}
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
        (0.5 * (h - (h.detach() + z[i])).pow(2).sum()).backward()
        for name in layers:
            a, g = inputs[name], outputs[name].grad[0]
            a_sum[name] = a_sum[name] + torch.outer(a, a)
            s_sum[name] = s_sum[name] + torch.outer(g, g)
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
    factors = fit_ekfac({"c": conv}, lambda: [lambda: conv(x)], seed=1)
    z = torch.randn((2, 3, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
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
    # One linear layer, every sample with the same input: the GGN is exactly A (x) S, so its EK-FAC
    # (with the corrected eigenvalues) is the GGN itself and the scores are a dense solve.
    torch.manual_seed(1)
    layer = torch.nn.Linear(3, 2, bias=False).double()
    x = torch.randn(1, 3, dtype=torch.float64).repeat(6, 1)
    factors = fit_ekfac({"l": layer}, lambda: [lambda: layer(x)], seed=0)
    z = torch.randn((6, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
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
    factors = fit_ekfac(layers, lambda: [lambda: net(x[:4]), lambda: net(x[4:])], seed=5)
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


def test_diffusion_factors_on_a_tiny_unet(tiny_model, tiny_images):
    spec = FeaturizerSpec("loss", timesteps=3, dim=8, projection="gaussian", seed=0)
    factors = fit_diffusion_ekfac(tiny_model, tiny_images, spec, noise_seed=0, seed=0)
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
    grads = torch.cat(list(full_gradients(tiny_model, tiny_images, spec, noise_seed=0)))
    direct = TimestepAveragedGradient(tiny_model, spec, 0)
    torch.testing.assert_close(grads[1], direct(tiny_images[1]), rtol=1e-4, atol=1e-6)
    a = ekfac_scores(EkfacPreconditioner(factors, layers, params), grads[:2], [grads], [0.1])[0.1]
    b = ekfac_scores(EkfacPreconditioner(restored, layers, params), grads[:2], [grads], [0.1])[0.1]
    assert a.shape == (2, 6) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)


def test_score_grid_in_target_and_train_blocks_equals_one_pass(tiny_model, tiny_images, monkeypatch):
    spec = FeaturizerSpec("squared_norm", timesteps=2, dim=8, projection="gaussian", seed=0)
    factors = fit_diffusion_ekfac(tiny_model, tiny_images, spec, noise_seed=0)
    whole = ekfac_score_grid(tiny_model, factors, tiny_images, tiny_images[:3], spec, 0, [0.1, 1.0])
    monkeypatch.setattr(ekfac, "MAX_TARGET_ENTRIES", 2 * num_parameters(tiny_model))
    chunked = ekfac_score_grid(tiny_model, factors, tiny_images, tiny_images[:3], spec, 0, [0.1, 1.0])
    for lam in (0.1, 1.0):
        assert whole[lam].shape == (3, 6)
        np.testing.assert_allclose(chunked[lam], whole[lam], rtol=1e-6, atol=1e-9)


def test_row_blocks_regroup_rows_in_order():
    chunks = [torch.arange(n * 2.0).reshape(n, 2) + 10 * n for n in (1, 3, 2)]
    blocks = list(row_blocks(iter(chunks), 4))
    assert [len(b) for b in blocks] == [4, 2]
    assert torch.equal(torch.cat(blocks), torch.cat(chunks))
    assert [len(b) for b in row_blocks(iter(chunks), 1)] == [1] * 6


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"kind": "ekfac", "featurizer": "das"}, "featurizers.das.normalize_timesteps"),
        ({"kind": "ekfac", "featurizer": "nope"}, "methods.E.featurizer"),
    ],
)
def test_ekfac_config_errors_name_the_key(method, message):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["methods"]["E"] = method
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        validate(config)
