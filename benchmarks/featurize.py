"""Featurization throughput: training step vs. reference (vmap per timestep + TRAK projector) vs. diffattr.

    python benchmarks/featurize.py            # every case, each in its own process; writes results/
    python benchmarks/featurize.py --case demo/diffattr   # one case, prints JSON
    python benchmarks/featurize.py --cases demo/train demo/diffattr   # rerun these, keep the other rows

Throughput is in sample-timesteps per second: a training step on a batch of B images does B of them,
featurizing one image at K timesteps does K. Same machine, model, inputs, K and k for every case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from diffattr.ekfac import (
    TRAIN_STREAM,
    Draws,
    EkfacPreconditioner,
    fit_diffusion_ekfac,
    full_gradients,
    kfac_layers,
)
from diffattr.families import build_model
from diffattr.families.base import DiffusionModel
from diffattr.gradients import FeaturizerSpec, featurize, featurize_trajectory, make_projector
from diffattr.models import PixelDiffusion, build_scheduler, build_unet
from diffattr.outputs import OUTPUT_FUNCTIONS, evenly_spaced_timesteps, fixed_noise
from diffattr.sampling import ddim_trajectory

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tiny Stable Diffusion of the tests (tests/tiny_sd.py)
RESULTS = ROOT / "benchmarks" / "results"
K, DIM = 10, 4096

# name: (model config source, image size, channels, training batch, images to featurize per case)
MODELS = {
    "demo": (ROOT / "config.yaml", 8, 1, 64, {"train": 40, "reference": 32, "diffattr": 64}),
    "paper": (
        ROOT / "experiments" / "cifar2-lds.yaml",
        32,
        3,
        32,
        {"train": 4, "reference": 2, "diffattr": 8},
    ),
    # the tiny text-conditioned UNet of the tests with LoRA adapters: featurized = the LoRA weights only
    "lora": (None, 8, 3, 32, {"train": 40, "diffattr": 64}),
}
# The reference's vmap batch, and how many of its projector's blocks are timed. On the CPU the TRAK
# BasicProjector regenerates a (parameters x 100) Gaussian block for each of its k / 100 blocks at every
# call: for the paper UNet that is 157 billion draws (~40 min) per call, identical work per block, so
# the paper case times the first blocks and scales by the block count (stated in the results).
REFERENCE = {"demo": {"batch": 4, "blocks": None}, "paper": {"batch": 2, "blocks": 3}}
# A dense Gaussian matrix for the paper UNet (38M x 4,096) does not fit in memory and would be
# regenerated per batch, the reference's own bottleneck; it is benchmarked on the demo model only.
CASES = {
    "demo": [
        "train",
        "reference",
        "diffattr",
        "diffattr-gaussian",
        "diffattr-normalized",
        "ekfac",
        "journey",
    ],
    "paper": ["train", "reference", "diffattr"],
    "lora": ["train", "diffattr"],
}


def build(name: str) -> tuple[DiffusionModel, torch.Tensor]:
    source, size, channels, _, counts = MODELS[name]
    if name == "lora":
        return build_lora(size, counts)
    defaults = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    model_cfg = {k: v["default"] for k, v in defaults["properties"]["model"]["properties"].items()}
    model_cfg.update(yaml.safe_load(source.read_text())["model"])
    torch.manual_seed(0)
    model = PixelDiffusion(
        build_unet(model_cfg, size, channels),
        build_scheduler({"num_train_timesteps": 1000, "beta_schedule": "linear"}),
    )
    n = max(counts.values()) * (1 if name == "paper" else 2)
    images = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return model, images


def build_lora(size: int, counts: dict) -> tuple[DiffusionModel, torch.Tensor]:
    """The tests' tiny Stable Diffusion snapshot (made in a temporary folder) with rank-4 LoRA adapters."""
    import tempfile

    from tests.tiny_sd import LORA, tiny_stable_diffusion

    snapshot = tiny_stable_diffusion(Path(tempfile.mkdtemp()) / "sd")
    model = build_model({"family": "lora", "pretrained": str(snapshot), "lora": LORA}, {}, (3, size, size))
    images = torch.rand(2 * max(counts.values()), 3, size, size, generator=torch.Generator().manual_seed(1))
    return model, images * 2 - 1


def bench_train(model: DiffusionModel, images: torch.Tensor, batch: int, steps: int) -> dict:
    """A batched training step of the trainable parameters: encode, forward, backward, AdamW update."""
    model.unet.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), 1e-4, foreach=True)
    x0 = images[:batch].repeat(max(1, batch // len(images) + 1), 1, 1, 1)[:batch]
    cond = model.condition([""] * batch)

    def step() -> None:
        latents = model.encode(x0)
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,))
        pred = model.predict_noise(model.add_noise(latents, noise, t), t, cond)
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"sample_timesteps": steps * batch, "seconds": seconds}


def bench_reference(model: PixelDiffusion, images: torch.Tensor, batch: int, blocks: int | None) -> dict:
    """D-TRAK's public recipe: per timestep, vmap(grad(f)) over the batch; sum over K; TRAK BasicProjector.

    With ``blocks`` set, only that many projector blocks are computed per call and the projection time is
    scaled by ``num_blocks / blocks`` (every block generates and multiplies a matrix of the same shape).
    """
    from torch.func import functional_call, grad, vmap
    from trak.projectors import BasicProjector, ProjectionType

    unet = model.unet.eval()
    params = {k: v.detach() for k, v in unet.named_parameters()}
    buffers = {k: v.detach() for k, v in unet.named_buffers()}
    n_params = sum(v.numel() for v in params.values())
    projector = BasicProjector(
        grad_dim=n_params,
        proj_dim=DIM,
        seed=0,
        proj_type=ProjectionType.normal,
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    timed_blocks = projector.num_blocks if blocks is None else min(blocks, projector.num_blocks)
    fn = OUTPUT_FUNCTIONS["squared_norm"]
    acp = model.scheduler.alphas_cumprod

    def f(p, b, x0, noise, t):
        x_t = model.add_noise(x0[None], noise[None], t[None])
        pred = functional_call(unet, (p, b), (x_t, t[None])).sample
        return fn(pred, noise[None], t[None], acp)[0]

    def project(grads: torch.Tensor) -> None:
        if timed_blocks == projector.num_blocks:
            projector.project(grads, model_id=0)
            return
        for i in range(timed_blocks):
            projector.generate_sketch_matrix(projector.generator_states[i])
            grads @ projector.proj_matrix

    per_sample = vmap(grad(f), in_dims=(None, None, 0, 0, 0))
    timesteps = evenly_spaced_timesteps(K, 1000)
    shape = tuple(images.shape[1:])
    grad_s = proj_s = 0.0
    for start in range(0, len(images), batch):
        x0 = images[start : start + batch]
        tick = time.perf_counter()
        total = None
        for t in timesteps:
            noise = fixed_noise(0, t, shape).expand_as(x0).contiguous()
            g = per_sample(params, buffers, x0, noise, torch.full((len(x0),), int(t)))
            flat = torch.cat([v.reshape(len(x0), -1) for v in g.values()], dim=1)
            total = flat if total is None else total + flat
        tock = time.perf_counter()
        project(total / K)
        grad_s += tock - tick
        proj_s += (time.perf_counter() - tock) * projector.num_blocks / timed_blocks
    return {
        "sample_timesteps": len(images) * K,
        "seconds": grad_s + proj_s,
        "projection_s": proj_s,
        "projection_blocks_timed": f"{timed_blocks}/{projector.num_blocks}",
    }


def bench_diffattr(
    model: DiffusionModel, images: torch.Tensor, projection: str, normalize_timesteps: bool = False
) -> dict:
    """diffattr's featurizer; with `normalize_timesteps`, each timestep's gradient scaled to unit norm
    before the average (DAS, ReTrac: per-timestep gradients by vmap)."""
    spec = FeaturizerSpec("squared_norm", K, DIM, projection, 0, normalize_timesteps)
    projector = make_projector(model, spec)  # built once per process, like a featurize job
    featurize(model, images[:1], spec, 8, projector=projector)  # warm-up
    stats: dict[str, float] = {}
    start = time.perf_counter()
    featurize(model, images, spec, 8, projector=projector, stats=stats)
    return {
        "sample_timesteps": len(images) * K,
        "seconds": time.perf_counter() - start,
        "projection_s": stats["projection_s"],
    }


def bench_ekfac(model: DiffusionModel, images: torch.Tensor) -> dict:
    """EK-FAC's per-sample path (rule ekfac_scores): unprojected loss gradients over K random (t, noise)
    draws per image, rotated into each layer's Kronecker eigenbasis (the rotation in `projection_s`). The
    factors, fitted beforehand on the same images, are not timed: rule ekfac_factors fits them once per
    model."""
    spec = FeaturizerSpec("loss", K, DIM, "sjlt", 0)
    params = model.trainable_parameters()
    factors = fit_diffusion_ekfac(model, images, spec, noise_seed=0, draws=K)
    preconditioner = EkfacPreconditioner(factors, kfac_layers(model.unet, params), params)
    draws = Draws.of(model, spec, 0, K)
    preconditioner.rotate(next(full_gradients(model, images[:1], spec, draws, TRAIN_STREAM)))  # warm-up
    rotate_s, start = 0.0, time.perf_counter()
    for grads in full_gradients(model, images, spec, draws, TRAIN_STREAM):
        tick = time.perf_counter()
        preconditioner.rotate(grads)
        rotate_s += time.perf_counter() - tick
    return {
        "sample_timesteps": len(images) * K,
        "seconds": time.perf_counter() - start,
        "projection_s": rotate_s,
    }


def bench_journey(model: DiffusionModel, images: torch.Tensor) -> dict:
    """Journey-TRAK's target featurizer: gradients at the K x_t of a K-step DDIM run per image."""
    spec = FeaturizerSpec("loss", K, DIM, "sjlt", 0)
    projector = make_projector(model, spec)
    _, trajectory = ddim_trajectory(model, np.arange(len(images)), K, 0.0, len(images))
    featurize_trajectory(
        model, {k: v[:1] if v.ndim > 1 else v for k, v in trajectory.items()}, spec, 0, projector
    )
    start = time.perf_counter()
    featurize_trajectory(model, trajectory, spec, 0, projector)
    return {"sample_timesteps": len(images) * K, "seconds": time.perf_counter() - start}


def run_case(case: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    load, measured = os.getloadavg()[0], time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    name, method = case.split("/")
    model, images = build(name)
    _, _, _, train_batch, counts = MODELS[name]
    if method == "train":
        result = bench_train(model, images, train_batch, counts["train"])
    elif method == "reference":
        result = bench_reference(model, images[: counts["reference"]], **REFERENCE[name])
    elif method == "journey":
        result = bench_journey(model, images[: counts["diffattr"]])
    elif method == "ekfac":
        result = bench_ekfac(model, images[: counts["diffattr"]])
    else:
        projection = "gaussian" if method == "diffattr-gaussian" else "sjlt"
        normalize = method == "diffattr-normalized"
        result = bench_diffattr(model, images[: counts["diffattr"]], projection, normalize)
    params = sum(p.numel() for p in model.trainable_parameters())  # LoRA: the adapters only
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": name,
        "case": method,
        "parameters": params,
        "K": K,
        "k": DIM,
        "threads": threads,
        **result,
        "throughput": result["sample_timesteps"] / result["seconds"],
        "peak_rss_mb": peak_mb,
        "measured": measured,
        "load_avg_1m": load,  # the machine's 1-minute load average as the case started
    }


def _cell(value: float | None, fmt: str) -> str:
    """A table cell: blank when there is no value (no reference case, a load not recorded)."""
    return "" if value is None or np.isnan(value) else fmt.format(value)


def summarize(rows: list[dict]) -> str:
    lines = [
        "| model | parameters | case | sample-timesteps/s | vs reference | vs training step | "
        "projection share | peak RSS (MB) | threads | load | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        by_case = {r["case"]: r for r in rows if r["model"] == name}
        for case, r in by_case.items():
            ref = by_case.get("reference", {}).get("throughput")
            train = by_case.get("train", {}).get("throughput")
            share = r.get("projection_s", float("nan")) / r["seconds"]
            blocks = r.get("projection_blocks_timed")
            label = (
                f"{case} (projection timed on {blocks} blocks)" if blocks and case == "reference" else case
            )
            lines.append(
                f"| {name} | {r['parameters'] / 1e6:.2f}M | {label} | {r['throughput']:.3g} | "
                f"{_cell(r['throughput'] / ref if ref else None, '{:.1f}x')} | "
                f"{_cell(100 * r['throughput'] / train if train else None, '{:.0f}%')} | "
                f"{_cell(100 * share, '{:.0f}%')} | {_cell(r['peak_rss_mb'], '{:.0f}')} | "
                f"{r['threads']} | {_cell(r.get('load_avg_1m'), '{:.1f}')} | {r.get('measured', '')} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help="model/case, e.g. paper/diffattr; default: all, each in a subprocess")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument(
        "--cases",
        nargs="+",
        help="only these model/case pairs; their rows replace those in featurize.csv, the others are kept",
    )
    parser.add_argument(
        "--summarize", action="store_true", help="only re-render featurize.md from featurize.csv"
    )
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.threads)))
        return 0
    if args.summarize:
        import pandas as pd

        rows = pd.read_csv(RESULTS / "featurize.csv").to_dict("records")
        write_results(rows, measured=False)
        return 0
    rows = []
    selected = args.cases or [f"{name}/{case}" for name in args.models for case in CASES[name]]
    for name, case in (s.split("/") for s in selected):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--case",
                f"{name}/{case}",
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{name}/{case}: {rows[-1]['throughput']:.2f} sample-timesteps/s", flush=True)
    if args.cases and (RESULTS / "featurize.csv").is_file():
        import pandas as pd

        kept = pd.read_csv(RESULTS / "featurize.csv").to_dict("records")
        rows += [r for r in kept if f"{r['model']}/{r['case']}" not in set(selected)]
    order = {f"{n}/{c}": i for i, (n, c) in enumerate((n, c) for n in MODELS for c in CASES[n])}
    rows.sort(key=lambda r: order.get(f"{r['model']}/{r['case']}", len(order)))
    write_results(rows, measured=True)
    return 0


def write_results(rows: list[dict], measured: bool) -> None:
    """featurize.csv (when just measured) and featurize.md in benchmarks/results, and the table on stdout."""
    import pandas as pd

    RESULTS.mkdir(parents=True, exist_ok=True)
    if measured:
        pd.DataFrame(rows).to_csv(RESULTS / "featurize.csv", index=False)
    table = summarize(rows)
    header = (
        f"# Featurization benchmark\n\nK = {K} timesteps, k = {DIM}, output squared_norm, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}; threads, the machine's "
        "load average as each case started and when it was measured are per row (a load above the thread "
        "count means other processes shared the cores: compare rows measured together).\n\n"
        "Cases: `train` = batched training step (forward, backward, AdamW); `reference` = D-TRAK's recipe "
        "(vmap(grad) per timestep, sum over K, traker 0.3.2 BasicProjector); "
        "`diffattr` = diffattr's featurizer "
        "with the sparse JL projection; `diffattr-gaussian` = the same with a dense Gaussian matrix; "
        "`diffattr-normalized` = the same with `normalize_timesteps` (DAS, ReTrac: each timestep's gradient "
        "by vmap, scaled to unit norm); `ekfac` = EK-FAC's per-sample path (unprojected loss gradients "
        "rotated into the Kronecker eigenbases, the rotation under projection share; factors not timed); "
        "`journey` = Journey-TRAK's trajectory featurizer. TracIn's checkpoint featurizer is `diffattr` "
        "at another model. "
        "Where the reference's projection was timed on a subset of its identical blocks, its time is scaled "
        "by the block count.\n\n"
    )
    (RESULTS / "featurize.md").write_text(header + table + "\n")
    print(table)


if __name__ == "__main__":
    raise SystemExit(main())
