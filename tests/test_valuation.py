"""Estimators against games with known values: additive, weighted voting, and exact enumeration."""

import numpy as np
import pytest

from diffattr.valuation import (
    banzhaf,
    datamodel,
    exact_banzhaf,
    exact_shapley,
    kernelshap,
    leave_one_out,
    leave_one_out_coalitions,
    sample_kernelshap_coalitions,
    sample_uniform_coalitions,
    shapley_kernel_size_probabilities,
    with_bootstrap,
)

WEIGHTS = np.array([0.5, -1.0, 2.0, 0.0, 1.5, 3.0])


def additive(mask):
    return 1.0 + float(WEIGHTS[mask].sum())


def voting(mask, weights=(4, 3, 2, 1, 1, 1), quota=7):
    return float(np.dot(mask, weights) >= quota)


def interactions(mask):
    """A game with pairwise and triple terms, for exact enumeration over n = 7."""
    x = mask.astype(float)
    return float(x[:3].sum() * x[3] + x[4] * x[5] * x[6] * 2 + np.sin(x.sum()))


def test_exact_shapley_matches_known_values():
    np.testing.assert_allclose(exact_shapley(additive, 6), WEIGHTS)
    # Weighted voting [quota 3; 2, 1, 1]: player 0 is pivotal in 4 of 6 orders.
    np.testing.assert_allclose(exact_shapley(lambda m: voting(m, (2, 1, 1), 3), 3), [2 / 3, 1 / 6, 1 / 6])


@pytest.mark.parametrize("game,n", [(additive, 6), (voting, 6), (interactions, 7)])
def test_kernelshap_recovers_shapley_within_its_standard_error(game, n):
    masks = sample_kernelshap_coalitions(n, 3000, seed=0)
    values = np.array([game(m) for m in masks])
    v_empty, v_full = game(np.zeros(n, bool)), game(np.ones(n, bool))
    est = with_bootstrap(lambda a, b: kernelshap(a, b, v_empty, v_full), masks, values, 100, seed=1)
    exact = exact_shapley(game, n)
    assert np.all(np.abs(est.values - exact) <= 4 * est.stderr + 1e-9), (est.values, exact, est.stderr)
    assert np.isclose(est.values.sum(), v_full - v_empty)


@pytest.mark.parametrize("game,n", [(additive, 6), (voting, 6), (interactions, 7)])
def test_banzhaf_recovers_exact_banzhaf_within_its_standard_error(game, n):
    masks = sample_uniform_coalitions(n, 4000, seed=2)
    values = np.array([game(m) for m in masks])
    est = with_bootstrap(banzhaf, masks, values, 100, seed=3)
    assert np.all(np.abs(est.values - exact_banzhaf(game, n)) <= 4 * est.stderr + 1e-9)


def test_leave_one_out_and_datamodel_are_exact_on_an_additive_game():
    n = len(WEIGHTS)
    masks = leave_one_out_coalitions(n)
    values = np.array([additive(m) for m in masks])
    np.testing.assert_allclose(leave_one_out(masks, values, additive(np.ones(n, bool))), WEIGHTS)
    uniform = sample_uniform_coalitions(n, 400, seed=4)
    fitted = datamodel(uniform, np.array([additive(m) for m in uniform]), ridge=1e-8)
    np.testing.assert_allclose(fitted, WEIGHTS, atol=1e-6)


def test_coalition_sizes_follow_the_shapley_kernel():
    n = 10
    masks = sample_kernelshap_coalitions(n, 20000, seed=5)
    observed = np.bincount(masks.sum(1), minlength=n)[1:n] / len(masks)
    expected = shapley_kernel_size_probabilities(n)
    se = np.sqrt(expected * (1 - expected) / len(masks))
    assert np.all(np.abs(observed - expected) < 4 * se)
    assert not masks.all(1).any() and masks.any(1).all()  # never empty or full


def test_coalition_designs_and_the_estimator_dispatch_recover_an_additive_game():
    from diffattr.valuation import coalition_design, estimate_values

    n = len(WEIGHTS)
    assert coalition_design("loo", n, 99, 0)[0].sum(1).tolist() == [n - 1] * n
    assert coalition_design("kernelshap", n, 50, 0)[0].shape == (50, n)
    for estimator in ("kernelshap", "banzhaf", "loo", "datamodel"):
        masks, weights, enumerated = coalition_design(estimator, n, 200, 1)
        assert (weights == 1).all() and enumerated == 0
        values = np.array([additive(m) for m in masks])
        result = estimate_values(
            estimator, masks, values, additive(np.zeros(n, bool)), additive(np.ones(n, bool)), 50, 0
        )
        if estimator == "banzhaf":  # MSR is unbiased, not exact, on sampled coalitions
            assert np.all(np.abs(result.values - WEIGHTS) < 4 * result.stderr + 1e-9)
        else:  # the datamodel's ridge penalty shrinks slightly
            atol = 0.02 if estimator == "datamodel" else 1e-6
            np.testing.assert_allclose(result.values, WEIGHTS, atol=atol, err_msg=estimator)
    with pytest.raises(ValueError, match="unknown estimator"):
        estimate_values("tmc", masks, values, 0.0, 1.0, 10, 0)


def test_enumerated_kernelshap_design_takes_the_heaviest_sizes_whole():
    from diffattr.valuation import enumerated_kernelshap_coalitions

    n = 10
    masks, weights, enumerated = enumerated_kernelshap_coalitions(n, 2 * n, seed=0)  # sizes 1 and n - 1
    assert enumerated == 2 * n
    assert sorted(masks.sum(1).tolist()) == [1] * n + [n - 1] * n
    assert len({m.tobytes() for m in masks}) == 2 * n
    np.testing.assert_allclose(weights, 1.0)  # the two sizes weigh the same per coalition
    masks, weights, enumerated = enumerated_kernelshap_coalitions(n, 50, seed=0)  # 30 of them drawn
    assert enumerated == 20
    assert (masks[:20].sum(1) % (n - 2) == 1).all() and np.isin(masks[20:].sum(1), range(2, n - 1)).all()
    kernel = shapley_kernel_size_probabilities(n)  # the enumerated rows carry sizes 1 and 9's mass
    assert np.isclose(weights.sum(), 50) and np.isclose(weights[:20].sum() / 50, kernel[0] + kernel[-1])
    drawn, unit, none = enumerated_kernelshap_coalitions(n, 15, seed=3)  # not even sizes 1 and 9 fit
    assert (drawn == sample_kernelshap_coalitions(n, 15, seed=3)).all() and (unit == 1).all() and not none
    with pytest.raises(Exception, match="shapley.num_coalitions"):
        enumerated_kernelshap_coalitions(4, 15, seed=0)  # only 14 coalitions of 4 players


@pytest.mark.parametrize("game,n", [(voting, 6), (interactions, 7)])
def test_weighted_kernelshap_on_every_coalition_is_exact(game, n):
    from diffattr.valuation import coalition_design, estimate_values

    masks, weights, enumerated = coalition_design("kernelshap", n, 2**n - 2, seed=0, enumerate_sizes=True)
    values = np.array([game(m) for m in masks])
    v_empty, v_full = game(np.zeros(n, bool)), game(np.ones(n, bool))
    result = estimate_values("kernelshap", masks, values, v_empty, v_full, 20, 0, weights, enumerated)
    np.testing.assert_allclose(result.values, exact_shapley(game, n), atol=1e-9)
    assert np.isnan(result.stderr).all()  # nothing drawn: no sampling error to estimate
    unweighted = kernelshap(masks, values, v_empty, v_full)  # the same coalitions, unweighted: not Shapley
    assert not np.allclose(unweighted, exact_shapley(game, n), atol=1e-3)


def test_singletons_and_leave_one_outs_rank_planted_players_of_a_planted_game_last():
    """The demo's game as measured: any clean player makes the property high, each planted one lowers it."""
    n, planted = 10, np.arange(10) >= 8

    def planted_game(mask):
        clean, bad = (mask & ~planted).sum(), (mask & planted).sum()
        return 0.0 if not clean else [0.8, 0.5, 0.3][bad]

    masks, weights, _ = coalition_design_for(n, 2 * n)
    values = np.array([planted_game(m) for m in masks])
    phi = kernelshap(masks, values, 0.0, planted_game(np.ones(n, bool)), weights)
    assert set(np.argsort(phi)[:2]) == {8, 9}
    assert np.isclose(phi.sum(), 0.3)
    # the regression's solution: mean of a player's value alone and its leave-one-out value, plus a
    # common shift so that the values sum to v(full) - v(empty)
    alone = np.array([planted_game(np.arange(n) == i) for i in range(n)])
    left_out = 0.3 - np.array([planted_game(np.arange(n) != i) for i in range(n)])
    np.testing.assert_allclose(phi, (alone + left_out) / 2 + (0.3 - (alone + left_out).sum() / 2) / n)
    assert set(np.argsort(exact_shapley(planted_game, n))[:2]) == {8, 9}


def test_bootstrap_resamples_only_the_drawn_coalitions():
    from diffattr.valuation import coalition_design, estimate_values

    n = 7
    masks, weights, enumerated = coalition_design("kernelshap", n, 40, seed=0, enumerate_sizes=True)
    assert enumerated == 14
    values = np.array([interactions(m) for m in masks])
    v_empty, v_full = interactions(np.zeros(n, bool)), interactions(np.ones(n, bool))
    kept = estimate_values("kernelshap", masks, values, v_empty, v_full, 50, 0, weights, enumerated)
    whole = estimate_values("kernelshap", masks, values, v_empty, v_full, 50, 0, weights, 0)
    np.testing.assert_allclose(kept.values, whole.values)
    assert np.isfinite(kept.stderr).all() and kept.stderr.mean() < whole.stderr.mean()


def coalition_design_for(n, count):
    from diffattr.valuation import coalition_design

    return coalition_design("kernelshap", n, count, seed=0, enumerate_sizes=True)


def test_named_coalitions_and_counterfactual_removal():
    from diffattr.valuation import coalition_mask, removal_coalition

    coalitions = {"fit": np.array([[True, False, True]]), "heldout": np.array([[False, True, True]])}
    assert coalition_mask("fit0", coalitions, None, 0.4).tolist() == [True, False, True]
    assert coalition_mask("heldout0", coalitions, None, 0.4).tolist() == [False, True, True]
    assert not coalition_mask("empty", coalitions, None, 0.4).any()
    assert coalition_mask("full", coalitions, None, 0.4).all()
    values = np.array([0.1, 3.0, -2.0, 1.0, 0.5])
    assert removal_coalition(values, 0.4, "top").tolist() == [True, False, True, False, True]
    assert removal_coalition(values, 0.4, "bottom").tolist() == [False, True, False, True, True]
    assert coalition_mask("top-sparse_ft", {"fit": np.zeros((1, 5), bool)}, values, 0.4).sum() == 3
    with pytest.raises(ValueError, match="unknown coalition"):
        coalition_mask("fitx", coalitions, None, 0.4)
