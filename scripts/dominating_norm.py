"""Rule dominating_norm: distinct training images in the reported targets' top-k, per method and split."""

import pandas as pd

from diffattr.dominating import dominating_norm
from diffattr.runtime import job
from diffattr.store import read_arrays, read_npz, write_csv

with job(snakemake.log[0]) as log:
    p = snakemake.params
    subsets = read_npz(snakemake.input.subsets)
    paths = iter(snakemake.input.scores)
    rows = []
    for method in p.methods:
        for split in p.splits[method]:
            scores = read_arrays(next(paths), ["scores"])["scores"][~subsets[f"heldout_{split}"]]
            rows.append({"method": method, "split": split, **dominating_norm(scores, p.top_k)})
            log.info("%s", rows[-1])
    write_csv(snakemake.output[0], pd.DataFrame(rows))
