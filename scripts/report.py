"""Rule report: the HTML report with the LDS chart."""

import pandas as pd

from diffattr.report import lds_figure, write_report
from diffattr.runtime import job
from diffattr.timings import stage_timings

with job(snakemake.log[0]):
    lds = pd.read_csv(snakemake.input.lds)
    lds_figure(lds, snakemake.output.figure)
    write_report(
        snakemake.output.html,
        snakemake.output.figure,
        lds,
        stage_timings(snakemake.params.benchmarks),
        dict(snakemake.params.config),
        [snakemake.input.lds],
    )
