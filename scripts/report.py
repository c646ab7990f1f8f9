"""Rule report: the experiment's one HTML page, from the results of every enabled branch."""

from pathlib import Path

from diffattr.report import build_report
from diffattr.runtime import job

with job(snakemake.log[0]) as log:
    p = snakemake.params
    inputs = {
        name: value if isinstance(value, str) else list(value) for name, value in snakemake.input.items()
    }
    shown = build_report(
        snakemake.output.html,
        inputs,
        {name: value for name, value in p.items() if name != "config"},
        dict(p.config),
        figures=[Path(f).stem for f in snakemake.output.figures],
    )
    log.info("report sections: %s", ", ".join(shown))
