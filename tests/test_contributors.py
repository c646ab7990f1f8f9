"""Contributors from class labels, metadata columns and random groups; coalition masks over images."""

import numpy as np
import pytest

from diffattr.contributors import assign_contributors, contributor_table, members
from diffattr.errors import InputError

SPEC = {"by": "class", "column": None, "group_size": 4, "seed": 0}


def test_by_class_gives_one_contributor_per_label_with_sizes():
    labels = np.array([3, 7, 3, 9, 7, 3])
    ids, names = assign_contributors(labels, SPEC)
    assert names == ["class 3", "class 7", "class 9"]
    assert ids.tolist() == [0, 1, 0, 2, 1, 0]
    assert contributor_table(ids, names)["images"].tolist() == [3, 2, 1]


def test_by_column_uses_the_metadata_and_names_a_missing_column():
    meta = {"artist": np.array(["b", "a", "b", "c"]), "file": np.array(list("wxyz"))}
    ids, names = assign_contributors(np.zeros(4), {**SPEC, "by": "column", "column": "artist"}, meta)
    assert names == ["a", "b", "c"] and ids.tolist() == [1, 0, 1, 2]
    with pytest.raises(InputError, match="shapley.contributors.column.*'identity'.*artist") as err:
        assign_contributors(np.zeros(4), {**SPEC, "by": "column", "column": "identity"}, meta)
    assert "\n" not in str(err.value)


def test_random_groups_have_the_given_size_and_are_seeded():
    ids, names = assign_contributors(np.zeros(10), {**SPEC, "by": "random"})
    assert np.bincount(ids).tolist() == [4, 4, 2] and len(names) == 3
    again, _ = assign_contributors(np.zeros(10), {**SPEC, "by": "random"})
    other, _ = assign_contributors(np.zeros(10), {**SPEC, "by": "random", "seed": 1})
    assert (ids == again).all() and (ids != other).any()


def test_members_selects_the_images_of_the_coalition():
    ids = np.array([0, 1, 2, 1, 0])
    assert members(ids, np.array([False, True, False])).tolist() == [False, True, False, True, False]


def test_empty_contributor_cells_and_a_single_contributor_are_one_line_errors():
    from diffattr.valuation import coalition_design

    meta = {"artist": np.array(["a", " ", "b"])}
    with pytest.raises(InputError, match="'artist' has empty cells"):
        assign_contributors(np.zeros(3), {**SPEC, "by": "column", "column": "artist"}, meta)
    with pytest.raises(InputError, match="1 contributor found") as err:
        coalition_design("kernelshap", 1, 10, 0)
    assert "\n" not in str(err.value)


def test_heldout_coalitions_keep_exactly_alpha_of_the_contributors():
    from diffattr.valuation import sample_heldout_coalitions

    masks = sample_heldout_coalitions(10, 50, 0.5, seed=0)
    assert (masks.sum(1) == 5).all() and len({m.tobytes() for m in masks}) > 40
    assert (sample_heldout_coalitions(10, 50, 0.5, seed=0) == masks).all()


def test_heldout_coalitions_are_never_fit_coalitions():
    from diffattr.valuation import sample_heldout_coalitions

    fit = sample_heldout_coalitions(4, 5, 0.5, seed=3)  # 5 of the 6 coalitions of 2 of 4 players
    heldout = sample_heldout_coalitions(4, 10, 0.5, seed=0, exclude=fit)
    assert not {m.tobytes() for m in heldout} & {m.tobytes() for m in fit}
    every = sample_heldout_coalitions(4, 6, 0.5, seed=0)
    all_six = np.array([r for r in np.unique(np.vstack([every, fit, heldout]), axis=0)])
    with pytest.raises(InputError, match="shapley.heldout.alpha"):
        sample_heldout_coalitions(4, 1, 0.5, seed=0, exclude=all_six)
