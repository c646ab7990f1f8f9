"""Rule report: the HTML report with the LDS chart and examples of top attributions."""

import numpy as np
import pandas as pd

from diffattr.data import read_imageset
from diffattr.report import lds_figure, top_attributions_figure, write_report
from diffattr.runtime import job
from diffattr.store import read_arrays, read_npz
from diffattr.timings import stage_timings

with job(snakemake.log[0]):
    p = snakemake.params
    lds = pd.read_csv(snakemake.input.lds)
    lds_figure(lds, snakemake.output.figure)
    shown = np.flatnonzero(~read_npz(snakemake.input.subsets)["heldout_gen"])[: p.examples]
    scores = {
        method: read_arrays(path, ["scores"])["scores"][shown]
        for method, path in zip(p.methods, snakemake.input.gen_scores, strict=True)
    }
    top_attributions_figure(
        read_imageset(snakemake.input.samples).images[shown],
        read_imageset(snakemake.input.train).images,
        scores,
        snakemake.output.examples,
    )
    write_report(
        snakemake.output.html,
        [snakemake.output.figure, snakemake.output.examples],
        lds,
        stage_timings(p.benchmarks),
        dict(p.config),
        [str(f) for f in snakemake.input],
    )
