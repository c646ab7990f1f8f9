"""Rule prepare_data: build the train and val image stores named by the config's `data` section."""

from diffattr.data import load_splits, write_imageset
from diffattr.runtime import job

with job(snakemake.log[0]) as log:
    splits = load_splits(snakemake.params.data)
    for split, images in splits.items():
        write_imageset(snakemake.output[split], images, attrs={"split": split, **snakemake.params.data})
        log.info("%s: %d images of shape %s", split, len(images), images.images.shape[1:])
