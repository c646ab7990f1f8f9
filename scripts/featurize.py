"""Rule featurize: projected per-sample gradients of one shard of a split."""

import numpy as np

from diffattr.checkpoints import saved_checkpoint
from diffattr.data import read_imageset
from diffattr.families import load_model
from diffattr.gradients import FeaturizerSpec, featurize
from diffattr.models import resolve_device
from diffattr.runtime import job
from diffattr.store import write_arrays

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    spec = FeaturizerSpec.from_config(p.featurizer)
    start = int(snakemake.wildcards.shard) * p.shard_size
    data = read_imageset(snakemake.input.images)
    images = data.tensor()[start : start + p.shard_size]
    captions = None if data.captions is None else data.captions[start : start + p.shard_size]
    model_dir = snakemake.input.model
    if getattr(p, "checkpoint", None) is not None:  # rule featurize_checkpoint (TracIn, ReTrac)
        model_dir = saved_checkpoint(model_dir, p.checkpoint)[0]
    model = load_model(model_dir).to(resolve_device(p.device))
    features = featurize(
        model, images, spec, p.batch_size, noise_seed=p.featurizer["noise_seed"], captions=captions
    )
    write_arrays(
        snakemake.output[0],
        {"features": features, "position": np.arange(start, start + len(images))},
        attrs={"start": start, **p.featurizer},
        chunk_rows=p.batch_size,
    )
    log.info("wrote %s features", features.shape)
