"""Rule reference_features: features of the training images, the reference of FID / KID, computed once."""

from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.properties import feature_extractor
from diffattr.runtime import job
from diffattr.store import write_npz

with job(snakemake.log[0], snakemake.threads) as log:
    device = resolve_device(snakemake.params.device)
    extractor = feature_extractor(snakemake.params.prop, snakemake.input.get("classifier"), device)
    features = extractor(read_imageset(snakemake.input.train).tensor())[1]
    write_npz(snakemake.output[0], features=features)
    log.info("reference features %s", features.shape)
