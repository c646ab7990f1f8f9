"""Rule pixel_scores: raw-pixel cosine similarity of each target to each training image."""

from diffattr.attribution import pixel_similarity
from diffattr.data import read_imageset
from diffattr.runtime import job
from diffattr.store import write_arrays

with job(snakemake.log[0]) as log:
    targets = read_imageset(snakemake.input.targets).images
    train = read_imageset(snakemake.input.train).images
    scores = pixel_similarity(targets, train).astype("float32")
    write_arrays(snakemake.output[0], {"scores": scores}, attrs={"lambda": None}, chunk_rows=256)
    log.info("scores %s", scores.shape)
