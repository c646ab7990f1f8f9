"""Rule datamodel_subsets: random training subsets of the datamodel retrains, none equal to an LDS subset."""

import numpy as np

from diffattr.errors import InputError
from diffattr.runtime import job
from diffattr.store import read_arrays, read_npz, write_npz
from diffattr.subsets import lds_subsets

with job(snakemake.log[0]) as log:
    cfg = snakemake.params.datamodel
    labels = read_arrays(snakemake.input.train, ["labels"])["labels"]
    masks, seeds = lds_subsets(labels, cfg["num_subsets"], cfg["alpha"], cfg["seed"])
    lds = read_npz(snakemake.input.lds)["masks"]
    shared = int((masks[:, None, :] == lds[None, :, :]).all(-1).any(1).sum())
    if shared:
        raise InputError(f"config key 'datamodel.seed': {shared} datamodel subsets equal an LDS subset")
    write_npz(snakemake.output[0], masks=masks, seeds=seeds)
    log.info("%d subsets of %d images (%.0f%% kept), none an LDS subset", *masks.shape, 100 * np.mean(masks))
