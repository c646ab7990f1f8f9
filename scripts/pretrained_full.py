"""Rule pretrained_full: the user's own trained model (model.pretrained, pixel or latent family) becomes the
attributed full model: loaded and checked against the training images, saved in the family's layout."""

from diffattr.data import read_imageset
from diffattr.families import load_own_model
from diffattr.runtime import job
from diffattr.store import atomic_path

with job(snakemake.log[0], snakemake.threads) as log:
    image_shape = read_imageset(snakemake.input.train).images.shape[1:]
    model = load_own_model(snakemake.params.model, image_shape)
    log.info(
        "%s model from %s for images of %s", model.family, snakemake.params.model["pretrained"], image_shape
    )
    with atomic_path(snakemake.output[0]) as tmp:
        model.save_pretrained(tmp)
    log.info("saved to %s", snakemake.output[0])
