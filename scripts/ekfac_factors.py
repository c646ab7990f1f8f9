"""Rule ekfac_factors: the full model's EK-FAC factors over the training images x their (t, noise) draws."""

from diffattr.data import read_imageset
from diffattr.device import resolve_device
from diffattr.ekfac import draw_count, factors_to_arrays, fit_diffusion_ekfac
from diffattr.families import load_model
from diffattr.gradients import FeaturizerSpec
from diffattr.runtime import job
from diffattr.store import write_npz

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    data = read_imageset(snakemake.input.images)
    model = load_model(snakemake.input.model).to(resolve_device(p.device))
    factors = fit_diffusion_ekfac(
        model,
        data.tensor(),
        FeaturizerSpec.from_config(p.featurizer),
        noise_seed=p.featurizer["noise_seed"],
        draws=draw_count(p.draws),
        captions=data.captions,
    )
    write_npz(snakemake.output[0], **factors_to_arrays(factors))
    log.info(
        "EK-FAC factors of %d layers over %d images, draws %s", len(factors), len(data.tensor()), p.draws
    )
