"""Render evaluation reports (Jinja2 templates in templates/): one self-contained HTML file, or
Markdown linking PNG files."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import jinja2
import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

DPI = 150

@dataclass
class Section:
    """One report section: HTML embeds `figures`, Markdown links `images` (relative PNG paths)."""

    heading: str
    text: list[str] = field(default_factory=list)
    tables: list[pd.DataFrame] = field(default_factory=list)
    figures: list[Figure | bytes | Path] = field(default_factory=list)
    images: list[str | Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A bare string would otherwise be rendered one character per paragraph.
        if isinstance(self.text, str):
            self.text = [self.text]


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render a matplotlib Figure to PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write a Figure as PNG (creating parent folders), close it, and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig, dpi))
    # Closing frees pyplot-managed figures; for pyplot-free Figures it is a no-op.
    plt.close(fig)
    return path


def _png_bytes(figure: Figure | bytes | Path) -> bytes:
    """PNG bytes of a Figure, raw PNG bytes, or a PNG file."""
    if isinstance(figure, Figure):
        return figure_png(figure)
    if isinstance(figure, Path):
        return figure.read_bytes()
    if isinstance(figure, bytes):
        return figure
    raise ValueError(f"figures must be matplotlib Figures, PNG bytes or Paths, got {type(figure)}")


def _cell(value: object) -> str:
    """Report text of one table cell: 4 significant digits for floats, a dash for missing."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return "—"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


def _table_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of a DataFrame, with the index as a first column unless it is 0..n-1."""
    show_index = not df.index.equals(pd.RangeIndex(len(df)))
    header = [str(c) for c in df.columns]
    body = [[_cell(v) for v in row] for row in df.itertuples(index=False, name=None)]
    if show_index:
        header = [str(df.index.name or ""), *header]
        body = [[_cell(i), *row] for i, row in zip(df.index, body, strict=True)]
    return header, body


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown pipe table."""
    header, body = _table_rows(df)

    def line(cells: Sequence[str]) -> str:
        # Pipes and newlines inside a cell would break the row.
        return "| " + " | ".join(c.replace("|", r"\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, body)])


def text_table(df: pd.DataFrame) -> str:
    """A plain-text table for the terminal: numeric columns right-aligned, others left-aligned."""
    header, body = _table_rows(df)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    numeric = [False] * (len(header) - len(numeric)) + numeric  # the index column, when shown
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if right else c.ljust(w)
            for c, w, right in zip(cells, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def _template(name: str) -> jinja2.Template:
    """A report template of templates/; HTML ones escape every value they insert."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cxrlab.experiments.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template(name)


def render_html(title: str, sections: Sequence[Section], banners: Sequence[tuple[str, bool]] = ()) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 PNG data URIs, escaped text;
    each banner (verdict, alarm) opens it, red for an alarm, green otherwise."""
    view = [
        {
            "heading": s.heading,
            "text": s.text,
            "tables": [_table_rows(t) for t in s.tables],
            "pngs": [base64.b64encode(_png_bytes(f)).decode("ascii") for f in s.figures],
        }
        for s in sections
    ]
    return _template("report.html.j2").render(title=title, sections=view, banners=banners)


def render_markdown(title: str, sections: Sequence[Section], banners: Sequence[tuple[str, bool]] = ()) -> str:
    """Markdown report with pipe tables and image links to the sections' PNG paths; each banner as a
    bold quote under the title."""
    view = [
        {
            "heading": s.heading,
            "text": s.text,
            "tables": [markdown_table(t) for t in s.tables],
            # Percent-encoding keeps paths with spaces or parentheses valid link targets.
            "links": [quote(Path(p).as_posix()) for p in s.images],
        }
        for s in sections
    ]
    return _template("report.md.j2").render(title=title, sections=view, banners=banners)
