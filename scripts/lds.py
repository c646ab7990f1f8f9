"""Rule lds: the linear datamodeling score of every method on every target split, on non-held-out targets,
with its bootstrap CIs over subsets and over targets."""

import numpy as np
import pandas as pd

from diffattr.metrics import lds_summary, stack_outputs
from diffattr.runtime import job
from diffattr.store import read_arrays, read_attrs, read_npz, write_csv

with job(snakemake.log[0]) as log:
    p = snakemake.params
    subsets = read_npz(snakemake.input.subsets)
    masks = subsets["masks"]
    records = [read_npz(path) for path in snakemake.input.outputs]
    rows, per_target = [], []
    score_paths = iter(snakemake.input.scores)
    for method in p.methods:
        for split in p.splits[method]:
            path = next(score_paths)
            evaluated = ~subsets[f"heldout_{split}"]
            scores = read_arrays(path, ["scores"])["scores"][evaluated]
            outputs = stack_outputs(records, len(masks), split)[:, evaluated]
            row, values = lds_summary(
                scores,
                masks,
                outputs,
                p.evaluate["bootstrap"],
                p.evaluate["ci"],
                p.evaluate["seed"],
            )
            rows.append(
                {
                    "method": method,
                    "split": split,
                    "lambda": read_attrs(path).get("lambda"),
                    **row,
                    "n_train_seeds": len(p.train_seeds),
                }
            )
            per_target.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "split": split,
                        "target": np.flatnonzero(evaluated),
                        "lds": values,
                    }
                )
            )
            log.info(
                "%s %s: LDS %.3f, CI over subsets [%.3f, %.3f], over targets [%.3f, %.3f]",
                method,
                split,
                row["lds"],
                row["subsets_ci_low"],
                row["subsets_ci_high"],
                row["targets_ci_low"],
                row["targets_ci_high"],
            )
    write_csv(snakemake.output.summary, pd.DataFrame(rows))
    write_csv(snakemake.output.per_target, pd.concat(per_target))
