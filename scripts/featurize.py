"""Rules featurize, featurize_checkpoint, featurize_member and their batches: projected per-sample
gradients of shards of a split.

`params.shards` lists each output's checkpoint (None = the model itself), split and shard (split
train_at_draws: the training images at their latest training draws, TracIn / ReTrac); a batch job
computes them in turn, each into its own output (diffattr.batching), loading each checkpoint once and
drawing the projection matrix once.
"""

import numpy as np

from diffattr.batching import each_model
from diffattr.checkpoints import saved_checkpoint
from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.families import load_model
from diffattr.gradients import FeaturizerSpec, featurize, featurize_at_draws, make_projector
from diffattr.runtime import job
from diffattr.store import write_arrays
from diffattr.training_draws import TrainingDraws

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    spec = FeaturizerSpec.from_config(p.featurizer)
    device = resolve_device(p.device)
    loaded, projector = None, None
    for shard, output in each_model(p.shards, snakemake.output, snakemake.threads):
        model_dir = snakemake.input.model
        if shard["checkpoint"] is not None:
            model_dir = saved_checkpoint(model_dir, shard["checkpoint"])
        if loaded is None or loaded[0] != shard["checkpoint"]:  # TracIn / ReTrac: one checkpoint at a time
            loaded = (shard["checkpoint"], load_model(model_dir).to(device))
        model = loaded[1]
        projector = projector or make_projector(model, spec)
        start = shard["shard"] * p.shard_size
        data = read_imageset(snakemake.input[shard["split"]])
        images = data.tensor()[start : start + p.shard_size]
        captions = None if data.captions is None else data.captions[start : start + p.shard_size]
        if shard["split"] == "train_at_draws":  # TracIn / ReTrac: each image at its latest training draw
            draws = TrainingDraws.load(model_dir)[start : start + p.shard_size]
            features = featurize_at_draws(model, images, draws, spec, projector, captions)
        else:
            features = featurize(
                model,
                images,
                spec,
                p.batch_size,
                noise_seed=p.featurizer["noise_seed"],
                captions=captions,
                projector=projector,
            )
        write_arrays(
            output,
            {"features": features, "position": np.arange(start, start + len(images))},
            attrs={"start": start, **p.featurizer},
            chunk_rows=p.batch_size,
        )
        log.info("%s: wrote %s features", shard, features.shape)
