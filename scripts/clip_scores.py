"""Rule clip_scores: cosine similarity of CLIP image embeddings of each target to each training image."""

from diffattr.clip import ClipEmbedder, clip_similarity
from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.runtime import job
from diffattr.store import write_arrays

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    embedder = ClipEmbedder(p.clip["model"], p.clip["weights"], resolve_device(p.device))
    targets = read_imageset(snakemake.input.targets).images
    train = read_imageset(snakemake.input.train).images
    scores = clip_similarity(embedder, targets, train).astype("float32")
    write_arrays(snakemake.output[0], {"scores": scores}, attrs={"lambda": None, **p.clip}, chunk_rows=256)
    log.info("scores %s with CLIP %s", scores.shape, p.clip["model"])
