"""The page: its sections, the Report a section builder gets (figures, tables, provenance), the HTML."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from diffattr.errors import InputError
from diffattr.report.figures import plt, save_figure
from diffattr.store import atomic_path

STYLE = """*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;line-height:1.45;color:#222;max-width:72em;margin:0 auto;
  padding:1em 1.5em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
img{max-width:100%;height:auto}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555;overflow-wrap:anywhere}
.table-box{width:fit-content;max-width:100%;overflow-x:auto;border:1px solid #ddd;margin:.5em 0}
table{border-collapse:collapse;font-size:.85em}
th{background:#f2f2f2;white-space:normal;overflow-wrap:anywhere;vertical-align:bottom}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td{white-space:nowrap}
pre{max-height:30em;overflow:auto;background:#f7f7f7;padding:.5em;font-size:.85em}
code,li,p{overflow-wrap:anywhere}
nav ol{columns:3;font-size:.9em}
.facts th,.facts td{text-align:left}
.note{font-size:.85em;color:#555}"""


@dataclass
class Section:
    """One part of the page: its anchor id, its heading and its HTML body."""

    id: str
    title: str
    body: str


@dataclass
class Report:
    """What a section builder gets: the named inputs, the settings, and writers of figures and tables."""

    folder: Path
    inputs: dict[str, Any]
    settings: dict[str, Any]
    config: dict
    figures: set[str] | None = None
    provenance: list[tuple[str, list[str]]] = field(default_factory=list)

    def input(self, name: str) -> Any:
        """The named input (a path or a list of paths), or None when the rule has none of that name."""
        value = self.inputs.get(name)
        if value is None or (isinstance(value, list | tuple) and len(value) == 0) or value == "":
            return None
        return value

    def _link(self, path: str | Path) -> str:
        return Path(os.path.relpath(Path(path).resolve(), self.folder.resolve())).as_posix()

    def figure(self, fig: plt.Figure, name: str, sources: list[str], caption: str) -> str:
        """Save `fig` as figures/{name}.png (a declared output) and return its <figure> element."""
        if self.figures is not None and name not in self.figures:
            plt.close(fig)
            raise InputError(
                f"report figure {name!r} is not a declared output (REPORT_FIGURES in rules/common.smk)"
            )
        save_figure(fig, self.folder / "figures" / f"{name}.png")
        return self.existing_figure(name, sources, caption)

    def existing_figure(self, name: str, sources: list[str], caption: str) -> str:
        """The <figure> element of figures/{name}.png, drawn by this or another rule from `sources`."""
        self.provenance.append((f"figures/{name}.png", [str(s) for s in sources]))
        return (
            f'<figure><img src="figures/{name}.png" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def table(self, frame: pd.DataFrame, sources: list[str], decimals: int = 3) -> str:
        """`frame` as an HTML table, every row shown and numbers at `decimals` places, with links to the
        files it came from."""
        self.provenance.append(
            (f"table from {', '.join(Path(s).name for s in sources)}", [str(s) for s in sources])
        )
        body = frame.to_html(index=False, float_format=lambda v: f"{v:.{decimals}f}", border=0, na_rep="")
        links = ", ".join(
            f'<a href="{html.escape(self._link(s))}">{html.escape(Path(s).name)}</a>' for s in sources
        )
        return f'<div class="table-box">{body}</div><p class="note">from {links}</p>'


Builder = Callable[[Report], "Section | None"]


def write_page(path: str | Path, title: str, sections: list[Section]) -> None:
    """An HTML page with a table of contents and the sections, written atomically."""
    contents = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>\n{s.body}\n</section>' for s in sections
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<nav><ol>{contents}</ol></nav>
{body}
</body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page)
