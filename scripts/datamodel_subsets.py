"""Rule datamodel_subsets: random training subsets of the datamodel retrains (and of the ensembles over
subsets), none equal to an LDS subset: a draw that equals one is skipped for the next of the same seed."""

import numpy as np

from diffattr.errors import InputError
from diffattr.runtime import job
from diffattr.store import read_arrays, read_npz, write_npz
from diffattr.subsets import lds_subsets

# candidates drawn beyond num_subsets (the draws are a prefix of the same seed's longer sequence, so the
# first num_subsets are the same whatever the spare count)
SPARE = 1000

with job(snakemake.log[0]) as log:
    cfg = snakemake.params.datamodel
    labels = read_arrays(snakemake.input.train, ["labels"])["labels"]
    masks, seeds = lds_subsets(labels, cfg["num_subsets"] + SPARE, cfg["alpha"], cfg["seed"])
    lds = {row.tobytes() for row in np.packbits(read_npz(snakemake.input.lds)["masks"], axis=1)}
    packed = np.packbits(masks, axis=1)
    fresh = np.array([m for m in range(len(masks)) if packed[m].tobytes() not in lds])[: cfg["num_subsets"]]
    if len(fresh) < cfg["num_subsets"]:
        raise InputError(
            f"config key 'datamodel.num_subsets': only {len(fresh)} draws of seed {cfg['seed']} differ "
            "from every LDS subset (too few training images for that many distinct subsets)"
        )
    skipped = int(fresh[-1]) + 1 - cfg["num_subsets"]
    write_npz(snakemake.output[0], masks=masks[fresh], seeds=seeds[fresh])
    log.info(
        "%d subsets of %d images (%.0f%% kept), none an LDS subset (%d draws equal to one skipped)",
        *(len(fresh), masks.shape[1], 100 * np.mean(masks[fresh]), skipped),
    )
