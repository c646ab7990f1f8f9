"""The experiment's report: one HTML page, `report/index.html`, with a section per result of the branches run.

How it is built: `build_report` calls every builder in `SECTIONS`, in order. A builder is a function
`builder(report: Report) -> Section | None`. It reads its inputs with `report.input(name)` (the report
rule's named inputs, from `report_inputs()` in rules/common.smk; None when the rule has no such input
because its branch is disabled or its stage is not in the DAG) and returns None when they are absent, so
the section is left out. It draws with `report.figure(fig, name, sources, caption)`, which saves
`report/figures/{name}.png` (a declared output of the rule, see below) and returns the HTML, and shows a
table with `report.table(frame, sources)` (every row, 3 decimals, linked to its CSV); both record which
input files the figure or table came from, for the provenance section.

To add a section (a few lines):

1. rules/common.smk, `report_inputs()`: add the named input when its stage is in the DAG, e.g.
   `inputs["dominating_norm"] = out("metrics/dominating_norm.csv")` under the condition that enables it.
   A figure the report draws itself: add `name: "input it needs"` to `REPORT_FIGURES` there, and a short
   caption `workflow/report/{name}.rst` (for `snakemake --report`). A figure another rule already wrote
   into `report/figures/` is shown with `report.existing_figure(name, sources, caption)`.
2. attribution_sections.py or contributor_sections.py: a builder, e.g.

       def dominating_norm_section(report: Report) -> Section | None:
           path = report.input("dominating_norm")
           if path is None:
               return None
           body = report.table(pd.read_csv(path), [path])
           return Section("dominating-norm", "Dominating norm", body)

3. insert it into `SECTIONS` where it should appear on the page.

Settings that are not files (method names, CI level, the benchmark folder, which rule belongs to which
branch) come from the rule's params as `report.settings[...]`. Figures are drawn at most 9.6 inches wide at
100 dpi (960 px), inside the page's content width at a 1280 px window, so their labels keep their size;
the page also caps every image at `max-width: 100%`, and table headers wrap so that tables fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffattr.errors import InputError
from diffattr.report.attribution_sections import (
    counterfactual_section,
    dominating_norm_section,
    lds_section,
    top_attributions_section,
)
from diffattr.report.contributor_sections import (
    agreement_section,
    contributor_counterfactual_section,
    cost_section,
    planted_section,
    shapley_lds_section,
    values_section,
)
from diffattr.report.figures import dominating_norm_figure, plt, save_figure
from diffattr.report.page import Builder, Report, Section, write_page
from diffattr.report.provenance import branch_timings, config_hash, provenance_section, timings_section

SECTIONS: list[Builder] = [
    lds_section,
    top_attributions_section,
    dominating_norm_section,
    counterfactual_section,
    values_section,
    shapley_lds_section,
    agreement_section,
    cost_section,
    contributor_counterfactual_section,
    planted_section,
    timings_section,
]


def build_report(
    path: str | Path,
    inputs: dict[str, Any],
    settings: dict[str, Any],
    config: dict,
    figures: list[str] | None = None,
    sections: list[Builder] | None = None,
) -> list[str]:
    """Write index.html at `path` (figures under figures/ beside it) from every section whose inputs are
    there, then config and provenance; `figures` are the declared figure names (None: any). Returns the
    titles of the sections shown."""
    report = Report(
        Path(path).parent,
        dict(inputs),
        dict(settings),
        dict(config),
        set(figures) if figures is not None else None,
    )
    shown = [
        s for builder in (SECTIONS if sections is None else sections) if (s := builder(report)) is not None
    ]
    if report.figures is not None:
        missing = report.figures - {Path(p).stem for p, _ in report.provenance if p.startswith("figures/")}
        if missing:
            raise InputError(
                f"report figures declared but not drawn (their inputs are missing): {sorted(missing)}"
            )
    shown.append(provenance_section(report))
    write_page(path, f"diffattr report: {config.get('experiment', '')}", shown)
    return [s.title for s in shown]


__all__ = [
    "SECTIONS",
    "Builder",
    "Report",
    "Section",
    "branch_timings",
    "build_report",
    "config_hash",
    "counterfactual_section",
    "dominating_norm_figure",
    "plt",
    "save_figure",
]
