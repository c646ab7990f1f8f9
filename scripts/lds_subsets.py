"""Rule lds_subsets: the LDS subset masks with their seeds, and the held-out targets of each split."""

from diffattr.runtime import job
from diffattr.store import read_arrays, write_npz
from diffattr.subsets import heldout_targets, lds_subsets

with job(snakemake.log[0]) as log:
    cfg = snakemake.params.lds
    labels = read_arrays(snakemake.input.train, ["labels"])["labels"]
    masks, seeds = lds_subsets(labels, cfg["num_subsets"], cfg["alpha"], cfg["seed"])
    heldout = {
        f"heldout_{split}": heldout_targets(n, cfg["heldout_fraction"], cfg["seed"] + i + 1)
        for i, (split, n) in enumerate(snakemake.params.n_targets.items())
    }
    write_npz(snakemake.output[0], masks=masks, seeds=seeds, **heldout)
    log.info("%d subsets of %d images (%.0f%% kept)", *masks.shape, 100 * masks.mean())
