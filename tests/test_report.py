"""The one report: built from small synthetic results, checked against the inputs and in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from diffattr.data import ImageSet, write_imageset
from diffattr.report import (
    SECTIONS,
    Report,
    Section,
    attribution_sections,
    branch_timings,
    build_report,
    config_hash,
    contributor_sections,
    figures,
)
from diffattr.store import write_arrays, write_json, write_npz

METHODS = ["TRAK", "D-TRAK", "pixel"]
CONTRIBUTORS = 12
HOWS = ["sparse_ft", "ft", "retrain"]
VIEWPORT = 1280


def write_lds_results(root: Path, rng: np.random.Generator, methods: list[str]) -> dict:
    """metrics/lds.csv, scores, samples, training images and subsets as the LDS branch writes them."""
    rows = [
        {
            "method": m,
            "split": s,
            "lambda": 0.1,
            "lds": v,
            "subsets_ci_low": v - 0.08,
            "subsets_ci_high": v + 0.02,
            "targets_ci_low": v - 0.05,
            "targets_ci_high": v + 0.05,
            "n_targets": 5,
        }
        for m, base in zip(methods, np.linspace(0.55, 0.2, len(methods)), strict=True)
        for s, v in (("val", base), ("gen", base - 0.3))
    ]
    pd.DataFrame(rows).to_csv(root / "lds.csv", index=False)
    n_train, n_gen = 20, 6
    images = rng.integers(0, 256, (n_train, 1, 8, 8), dtype=np.uint8)
    zeros = np.zeros(n_train, np.int64)
    write_imageset(root / "train.zarr", ImageSet(images, zeros, zeros, np.arange(n_train)))
    gen = rng.integers(0, 256, (n_gen, 1, 8, 8), dtype=np.uint8)
    write_imageset(
        root / "samples.zarr",
        ImageSet(gen, np.zeros(n_gen, np.int64), np.zeros(n_gen, np.int64), np.arange(n_gen)),
    )
    write_npz(root / "lds.npz", heldout_gen=np.array([True, False, False, True, False, False]))
    scores = []
    for m in methods:
        write_arrays(root / f"{m}.zarr", {"scores": rng.normal(size=(n_gen, n_train)).astype(np.float32)})
        scores.append(str(root / f"{m}.zarr"))
    dominating = [
        {"method": m, "split": s, "k": 3, "n_targets": 4, "distinct": 9, "distinct_share": 0.75}
        | {"most_frequent": 2, "most_frequent_share": 0.5}
        for m in methods
        for s in ("val", "gen")
    ]
    pd.DataFrame(dominating).to_csv(root / "dominating_norm.csv", index=False)
    return {
        "lds": str(root / "lds.csv"),
        "dominating_norm": str(root / "dominating_norm.csv"),
        "gen_scores": scores,
        "samples": str(root / "samples.zarr"),
        "train": str(root / "train.zarr"),
        "subsets": str(root / "lds.npz"),
    }


def write_shapley_results(root: Path, rng: np.random.Generator, contributors: int) -> dict:
    """Values per (estimator, way), Shapley LDS, agreement, cost, counterfactual and pruning.json."""
    (root / "values").mkdir()
    values = []
    for estimator in ("kernelshap", "datamodel"):
        for how in HOWS:
            table = pd.DataFrame(
                {
                    "contributor": range(contributors),
                    "name": [f"a contributor with a long name {c}" for c in range(contributors)],
                    "images": 30,
                    "value": rng.normal(size=contributors),
                    "stderr": rng.uniform(0.05, 0.2, contributors),
                    "property": "inception_score",
                    "estimator": estimator,
                    "how": how,
                }
            )
            path = root / "values" / f"{estimator}-{how}.csv"
            table.to_csv(path, index=False)
            values.append(str(path))
    lds = pd.DataFrame(
        [
            {"estimator": e, "how": h, "lds": 0.3, "ci_low": 0.1, "ci_high": 0.5, "coalitions": 8}
            for e in ("kernelshap", "datamodel")
            for h in HOWS
        ]
    )
    lds.to_csv(root / "shapley_lds.csv", index=False)
    agreement = pd.DataFrame(
        [
            {
                "estimator": "kernelshap",
                "how": h,
                "versus": "retrain",
                "method": m,
                "r": 0.9,
                "ci_low": 0.5,
                "ci_high": 1,
            }
            for h in HOWS[:-1]
            for m in ("pearson", "spearman")
        ]
    )
    agreement.to_csv(root / "agreement.csv", index=False)
    cost = pd.DataFrame({"how": HOWS, "models": 10, "steps": [60, 60, 300], "seconds": [1.7, 2.0, 13.4]})
    cost.to_csv(root / "cost.csv", index=False)
    counterfactual = pd.DataFrame(
        [
            {
                "ranked_by": f"kernelshap-{h}",
                "removed": side,
                "property": "inception_score",
                "value": 5.9,
                "stderr": np.nan,
                "full": 7.2,
                "change": -1.3,
            }
            for h in HOWS
            for side in ("top", "bottom")
        ]
    )
    counterfactual.to_csv(root / "counterfactual.csv", index=False)
    pruning = {
        "pruning": {
            "removed_fraction": 0.5,
            "ratio": 0.5,
            "parameters_before": 164000,
            "parameters_after": 42000,
        },
        "finetune_seconds": 2.9,
    }
    write_json(root / "pruned" / "pruning.json", pruning)
    return {
        "values": values,
        "shapley_lds": str(root / "shapley_lds.csv"),
        "agreement": str(root / "agreement.csv"),
        "cost": str(root / "cost.csv"),
        "contributor_counterfactual": str(root / "counterfactual.csv"),
        "pruned": str(root / "pruned"),
    }


def write_benchmarks(root: Path) -> Path:
    """Benchmark TSVs as Snakemake writes them: two LDS-branch rules, one contributor-branch rule."""
    jobs = {"train_lds": [10.0, 12.0], "lds": [1.0], "coalition_model": [3.0, 4.0, 5.0]}
    for rule, seconds in jobs.items():
        for i, s in enumerate(seconds):
            path = root / "benchmarks" / rule / f"{i}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:01\t{100 + i}\n")
    return root / "benchmarks"


BRANCHES = {"train_lds": "LDS branch", "lds": "LDS branch", "coalition_model": "contributor branch"}


def synthetic(root: Path, methods: list[str], contributors: int) -> dict:
    """Synthetic inputs of both branches, and the settings the report rule passes."""
    rng = np.random.default_rng(0)
    inputs = {**write_lds_results(root, rng, methods), **write_shapley_results(root, rng, contributors)}
    settings = {
        "methods": methods,
        "examples": 3,
        "level": 0.95,
        "estimator": "kernelshap",
        "prop": "inception_score",
        "benchmarks": str(write_benchmarks(root)),
        "branches": BRANCHES,
        "source": str(Path(__file__).parent),
    }
    return {
        "inputs": inputs,
        "settings": settings,
        "config": {"experiment": "synthetic", "lds": {"alpha": 0.5}},
    }


@pytest.fixture
def results(tmp_path: Path) -> dict:
    return synthetic(tmp_path, METHODS, CONTRIBUTORS)


def test_both_branches_give_every_section_and_figure(results, tmp_path):
    page = tmp_path / "report" / "index.html"
    shown = build_report(page, **results)
    assert shown == [
        "Linear datamodeling score",
        "Top-attributed training images",
        "Dominating norm: the same training images for every target?",
        "Contributor values",
        "Shapley LDS",
        "Agreement with retraining",
        "Cost per coalition model",
        "Counterfactual: remove top or bottom contributors",
        "Stage timings",
        "Config and provenance",
    ]
    text = page.read_text()
    figures = set(re.findall(r'src="figures/(\w+)\.png"', text))
    assert figures == {
        *("lds", "top_attributions", "dominating_norm"),
        *("values", "shapley_lds", "contributor_counterfactual"),
    }
    assert all((page.parent / "figures" / f"{name}.png").stat().st_size > 1000 for name in figures)
    assert config_hash(results["config"]) in text and "Pruning removed 50% of channels" in text
    assert "a contributor with a long name 11" in text


def test_a_disabled_branch_leaves_its_sections_out(results, tmp_path):
    lds_only = {
        k: v
        for k, v in results["inputs"].items()
        if k in ("lds", "gen_scores", "samples", "train", "subsets")
    }
    page = tmp_path / "lds-only" / "index.html"
    shown = build_report(
        page, lds_only, results["settings"], results["config"], figures=["lds", "top_attributions"]
    )
    assert "Contributor values" not in shown and "Linear datamodeling score" in shown
    assert sorted(p.name for p in (page.parent / "figures").iterdir()) == ["lds.png", "top_attributions.png"]


def test_undeclared_or_undrawn_figures_are_one_line_errors(results, tmp_path):
    from diffattr.errors import InputError

    with pytest.raises(InputError, match="not a declared output"):
        build_report(tmp_path / "a" / "index.html", **results, figures=["lds"])
    lds_only = {"lds": results["inputs"]["lds"]}
    with pytest.raises(InputError, match="declared but not drawn"):
        build_report(
            tmp_path / "b" / "index.html", lds_only, {}, results["config"], figures=["lds", "values"]
        )


def test_a_new_section_is_one_builder(results, tmp_path):
    def extra(report: Report) -> Section | None:
        path = report.input("extra")
        return None if path is None else Section("extra", "Extra", report.table(pd.read_csv(path), [path]))

    (tmp_path / "extra.csv").write_text("a,b\n1,2\n")
    inputs = {**results["inputs"], "extra": str(tmp_path / "extra.csv")}
    shown = build_report(
        tmp_path / "r" / "index.html",
        inputs,
        results["settings"],
        results["config"],
        sections=[*SECTIONS, extra],
    )
    assert "Extra" in shown and "extra.csv" in (tmp_path / "r" / "index.html").read_text()


def test_timings_are_split_by_branch_and_summed_per_stage(tmp_path):
    benchmarks = write_benchmarks(tmp_path)
    (benchmarks / "report").mkdir()
    (benchmarks / "report" / "all.tsv").write_text("s\th:m:s\tmax_rss\n2.0\t0:00:02\t90\n")
    assert list(branch_timings(benchmarks, {})) == ["all stages"]
    tables = branch_timings(benchmarks, BRANCHES)
    assert list(tables) == ["LDS branch", "contributor branch"]  # the report's own job is in neither
    lds = tables["LDS branch"].set_index("stage")
    assert lds.loc["train_lds", "jobs"] == 2 and lds.loc["train_lds", "total_s"] == 22.0
    assert lds.loc["total", "total_s"] == 23.0 and "coalition_model" not in lds.index
    contributor = tables["contributor branch"].set_index("stage")
    assert (
        contributor.loc["coalition_model", "total_s"] == 12.0
        and contributor.loc["coalition_model", "longest_s"] == 5.0
    )


PROBE = """<script>
window.addEventListener("load", () => {
  const doc = document.documentElement;
  const wide = [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
    .map((e) => e.tagName + (e.id ? "#" + e.id : ""));
  const images = [...document.images].map((i) => ({src: i.getAttribute("src"), complete: i.complete,
    naturalWidth: i.naturalWidth, width: i.getBoundingClientRect().width}));
  const clipped = [...document.querySelectorAll(".table-box")]
    .filter((b) => b.scrollWidth > b.clientWidth + 1)
    .map((b) => (b.closest("section") || b.parentElement).id || "a table");
  const probe = document.createElement("pre");
  probe.id = "probe";
  const innerWidth = window.innerWidth;
  probe.textContent = JSON.stringify({scrollWidth: doc.scrollWidth, innerWidth, wide, clipped, images});
  document.body.appendChild(probe);
});
</script>"""


def chromium() -> str:
    """Path of Debian's chromium, or skip: `make test` installs it with apt when run as root."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "chromium is not installed (make test installs Debian's chromium with apt when run as root)"
        )
    return path


def measure_in_chromium(page: Path, width: int = VIEWPORT) -> dict:
    """Open a copy of `page` (beside it, so relative images resolve) with a probe script in headless
    Chromium at `width` px, and return what the probe measured after the load event."""
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    profile = page.parent / ".chromium-profile"
    try:
        result = subprocess.run(
            [
                chromium(),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},2400",
                "--virtual-time-budget=10000",
                "--dump-dom",
                probe.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        probe.unlink()
        shutil.rmtree(profile, ignore_errors=True)
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"chromium printed no measurement (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_report_fits_1280_px_and_every_image_loads_in_chromium(results, tmp_path):
    page = tmp_path / "report" / "index.html"
    build_report(page, **results)
    measured = measure_in_chromium(page)
    assert measured["innerWidth"] == VIEWPORT
    assert measured["scrollWidth"] <= VIEWPORT, f"page wider than the window: {measured['wide']}"
    assert not measured["clipped"], f"tables wider than their box: {measured['clipped']}"
    assert len(measured["images"]) == page.read_text().count("<img ") >= 5
    for image in measured["images"]:
        assert image["complete"] and image["naturalWidth"] > 0, f"image did not load: {image}"
        assert image["width"] <= VIEWPORT


def test_many_methods_and_contributors_still_fit_in_chromium(tmp_path):
    """A paper-sized report: 14 methods (the attribution grid wraps), 60 contributors (40 are drawn)."""
    methods = [f"method-{i}" for i in range(14)]
    page = tmp_path / "report" / "index.html"
    results = synthetic(tmp_path, methods, 60)
    results["settings"]["examples"] = 2
    build_report(page, **results)
    measured = measure_in_chromium(page)
    assert measured["scrollWidth"] <= VIEWPORT, f"page wider than the window: {measured['wide']}"
    assert not measured["clipped"], f"tables wider than their box: {measured['clipped']}"
    assert all(image["naturalWidth"] > 0 and image["naturalWidth"] <= 1000 for image in measured["images"])


def test_bars_accept_a_ci_that_excludes_its_estimate_or_is_missing():
    """A percentile CI may lie beside its point estimate, and a constant property has no CI at all."""
    fig, ax = plt.subplots()
    value = np.array([0.3, 0.2, 0.1])
    err = np.array([[-0.05, np.nan, 0.02], [0.1, np.nan, 0.02]])
    figures.grouped_bars(ax, ["a", "b", "c"], {"seed-averaged": (value, err)}, horizontal=False)
    bars = next(c for c in ax.containers if isinstance(c, ErrorbarContainer))
    lengths = [float(s[1][1] - s[0][1]) for s in bars.lines[2][0].get_segments()]
    assert np.round(lengths, 6).tolist() == [0.1, 0.0, 0.04]  # the negative side drawn as 0
    plt.close(fig)


def test_lds_section_shows_the_interval_over_subsets_first_and_draws_it(results, tmp_path):
    """The papers' interval (over subsets) is the table's first CI and the figure's error bars; the text
    names both intervals."""
    path = results["inputs"]["lds"]
    section = attribution_sections.lds_section(
        Report(tmp_path, {"lds": path}, {"level": 0.9}, {}, figures={"lds"})
    )
    header = re.findall(r"<th>(\w+)</th>", section.body)
    assert (
        header.index("subsets_ci_low") < header.index("targets_ci_low")
        and "90% bootstrap CIs" in section.body
    )
    assert "resample the subsets" in section.body and "resample the targets" in section.body
    lds = pd.read_csv(path)
    fig = figures.lds_figure(lds)
    bars = next(c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer))
    ends = [(s[0][1], s[1][1]) for s in bars.lines[2][0].get_segments()]
    val = lds[lds["split"] == "val"]
    assert np.allclose(ends, val[["subsets_ci_low", "subsets_ci_high"]].to_numpy())
    plt.close(fig)


def test_top_attributions_with_fewer_methods_than_a_line_holds():
    targets = np.zeros((2, 1, 8, 8), np.uint8)
    train = np.arange(5 * 64, dtype=np.uint8).reshape(5, 1, 8, 8)
    scores = {"D-TRAK": np.random.default_rng(0).normal(size=(2, 5))}
    fig = figures.top_attributions_figure(targets, train, scores, top=4)
    assert len(fig.axes) == 2 * (1 + 4)
    plt.close(fig)


def test_values_section_names_the_coalitions_the_values_were_fitted_on():
    import yaml

    from diffattr.config import validate
    from tests.workflow_helpers import ROOT

    config = validate(yaml.safe_load((ROOT / "config.yaml").read_text()))
    demo = contributor_sections._coalitions_used(Report(Path("."), {}, {}, config))
    assert "every contributor alone and every leave-one-out" in demo and "datamodel" not in demo
    config["shapley"]["enumerate_sizes"] = False
    config["shapley"]["datamodel"].update(num_coalitions=100, alpha=0.5)
    drawn = contributor_sections._coalitions_used(Report(Path("."), {}, {}, config))
    assert drawn == (
        "20 fit coalitions drawn for kernelshap; "
        "the ridge datamodel on its own 100 random coalitions (alpha 0.5)."
    )
