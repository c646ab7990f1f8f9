"""Rule train_classifier: the small CNN whose probabilities and features measure IS, entropy, FID and KID."""

import torch

from diffattr.data import read_imageset
from diffattr.properties import train_classifier
from diffattr.runtime import job

with job(snakemake.log[0], snakemake.threads) as log:
    cfg = snakemake.params.classifier
    data = read_imageset(snakemake.input.train)
    _, labels = torch.unique(torch.as_tensor(data.labels), return_inverse=True)
    images = data.tensor()
    model = train_classifier(
        images,
        labels.numpy(),
        cfg["steps"],
        cfg["lr"],
        cfg["batch_size"],
        cfg["width"],
        snakemake.params.seed,
    )
    with torch.no_grad():
        accuracy = float((model(images)[0].argmax(1) == labels).float().mean())
    model.save_pretrained(snakemake.output[0], extra={"train_accuracy": accuracy})
    log.info("classifier: %d classes, train accuracy %.3f", int(labels.max()) + 1, accuracy)
