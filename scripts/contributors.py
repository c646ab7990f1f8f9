"""Rule contributors: the branch's training images with each one's contributor (planted contributors'
images corrupted), the clean reference images, and the contributor table."""

import dataclasses

from diffattr.contributors import assign_contributors, contributor_table
from diffattr.data import load_splits, write_imageset
from diffattr.planted import plant
from diffattr.runtime import job
from diffattr.store import write_csv

with job(snakemake.log[0]) as log:
    spec = snakemake.params.contributors
    # the key the user wrote, for messages only (not a parameter of the outputs)
    section = "shapley.data" if snakemake.config["shapley"].get("data") else "data"
    train = load_splits(snakemake.params.data, section)["train"]
    ids, names = assign_contributors(train.labels, spec, train.metadata)
    train.contributors = ids
    table = contributor_table(ids, names)
    images, planted = plant(train.images, ids, spec["planted"], len(names))
    table["planted"] = planted
    write_imageset(
        snakemake.output.reference, train, attrs={"split": "reference", "contributor_names": names}
    )
    write_imageset(
        snakemake.output.train,
        dataclasses.replace(train, images=images),
        attrs={"split": "train", "contributor_names": names},
    )
    write_csv(snakemake.output.table, table)
    log.info(
        "%d images, %d contributors (sizes %d-%d); planted (%s): %s",
        len(train),
        len(names),
        table.images.min(),
        table.images.max(),
        spec["planted"]["corruption"],
        [names[i] for i in planted.nonzero()[0]] or "none",
    )
