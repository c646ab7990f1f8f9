"""Rule contributors: the branch's training images with each one's contributor, and the contributor table."""

from diffattr.contributors import assign_contributors, contributor_table
from diffattr.data import load_splits, write_imageset
from diffattr.runtime import job
from diffattr.store import write_csv

with job(snakemake.log[0]) as log:
    train = load_splits(snakemake.params.data)["train"]
    ids, names = assign_contributors(train.labels, snakemake.params.contributors, train.metadata)
    train.contributors = ids
    table = contributor_table(ids, names)
    write_imageset(snakemake.output.train, train, attrs={"split": "train", "contributor_names": names})
    write_csv(snakemake.output.table, table)
    log.info(
        "%d images, %d contributors (sizes %d-%d)",
        len(train),
        len(names),
        table.images.min(),
        table.images.max(),
    )
