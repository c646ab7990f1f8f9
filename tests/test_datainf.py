"""DataInf against its definition: the mean of explicitly inverted per-sample damped matrices."""

import numpy as np
import pytest

from diffattr.attribution import GradientInputs
from diffattr.config import validate
from diffattr.datainf import datainf_scores
from diffattr.registry import method_kind, score_function
from diffattr.store import write_arrays


def _by_definition(targets, train, lambda_rel):
    """g_j^T [(1/N) sum_k (g_k g_k^T + lam I)^-1] g_i by numpy's inverse, lam relative to the mean norm^2."""
    lam = lambda_rel * np.mean([g @ g for g in train])
    eye = np.eye(train.shape[1])
    mean_inverse = sum(np.linalg.inv(np.outer(g, g) + lam * eye) for g in train) / len(train)
    return np.array([[t @ mean_inverse @ g for g in train] for t in targets])


@pytest.mark.parametrize(("n", "k"), [(6, 9), (11, 4)])
@pytest.mark.parametrize("lambda_rel", [0.01, 1.0])
def test_datainf_equals_the_mean_of_the_per_sample_inverses(n, k, lambda_rel):
    rng = np.random.default_rng(n)
    train, targets = rng.normal(size=(n, k)), rng.normal(size=(3, k))
    expected = _by_definition(targets, train, lambda_rel)
    np.testing.assert_allclose(datainf_scores(targets, train, lambda_rel), expected, rtol=1e-8, atol=1e-12)


def test_a_datainf_method_is_scored_from_its_featurizers_shards_at_a_chosen_damping(tmp_path):
    config = validate({"methods": {"DataInf": {"kind": "datainf", "featurizer": "trak"}}})
    kind = method_kind(config["methods"]["DataInf"]["kind"])
    assert (kind.rule, kind.features, kind.damping, kind.splits) == (
        "local_scores",
        "model",
        True,
        ("val", "gen"),
    )
    rng = np.random.default_rng(0)
    train, targets = rng.normal(size=(5, 7)), rng.normal(size=(2, 7))
    shards = [tmp_path / "0.zarr", tmp_path / "1.zarr"]
    for path, rows in zip(shards, (train[:3], train[3:]), strict=True):
        write_arrays(path, {"features": rows.astype(np.float32)})
    score = score_function("datainf")(config["methods"]["DataInf"], GradientInputs(shards))
    stored = train.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(score(targets, 0.1), _by_definition(targets, stored, 0.1), rtol=1e-8)
