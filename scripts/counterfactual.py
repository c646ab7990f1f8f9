"""Rule counterfactual: distance of each regenerated target to its original (pixel L2, CLIP cosine), per
target and summarised per method with bootstrap CIs, and the figure of original vs counterfactual images."""

import numpy as np
import pandas as pd

from diffattr.counterfactual import counterfactual_figure, pixel_l2, summarize
from diffattr.data import read_imageset
from diffattr.runtime import job
from diffattr.store import read_npz, write_csv

with job(snakemake.log[0]) as log:
    p = snakemake.params
    originals = read_imageset(snakemake.input.samples).images
    records = [read_npz(path) for path in snakemake.input.counterfactuals]
    targets = np.array([int(r["target"]) for r in records])
    images = np.stack([r["image"] for r in records])
    per_target = pd.DataFrame(
        {
            "method": [method for method, _ in p.jobs],
            "slot": [slot for _, slot in p.jobs],
            "target": targets,
            "image_seed": [int(r["image_seed"]) for r in records],
            "removed": [len(r["removed"]) for r in records],
            # of those, how many the method scored positive (random: all)
            "removed_positive": [int(r["positive"]) for r in records],
            "pixel_l2": pixel_l2(originals[targets], images),
        }
    )
    metrics = ["pixel_l2"]
    if p.clip["weights"]:
        from diffattr.clip import ClipEmbedder, paired_cosine
        from diffattr.device import resolve_device

        embedder = ClipEmbedder(p.clip["model"], p.clip["weights"], resolve_device(p.device))
        per_target["clip_cosine"] = paired_cosine(embedder, originals[targets], images)
        metrics.append("clip_cosine")
    else:
        log.info("no CLIP weights (config key 'clip.weights'): CLIP cosine not measured")
    ev = p.evaluate
    summary = summarize(per_target, metrics, ev["bootstrap"], ev["ci"], ev["seed"])
    write_csv(snakemake.output.per_target, per_target)
    write_csv(snakemake.output.summary, summary)
    methods = list(dict.fromkeys(per_target["method"]))
    order = {m: per_target.index[per_target["method"] == m].to_numpy() for m in methods}
    first = order[methods[0]]
    counterfactual_figure(
        originals[targets[first]],
        {m: images[order[m]] for m in methods},
        {m: per_target["pixel_l2"].to_numpy()[order[m]] for m in methods},
        snakemake.output.figure,
    )
    for row in summary.itertuples():
        log.info(
            "%s: pixel L2 %.3f [%.3f, %.3f]",
            row.method,
            row.pixel_l2,
            row.pixel_l2_ci_low,
            row.pixel_l2_ci_high,
        )
