"""Render evaluation reports: one self-contained HTML file, or Markdown linking PNG files."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

DPI = 150

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #446; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; color: #335; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccd; padding: .25rem .6rem; text-align: right; }
th { background: #eef; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0; }
img { max-width: 100%; height: auto; }
nav ol { padding-left: 1.4rem; }
"""


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


def _html_table(df: pd.DataFrame) -> str:
    """An escaped HTML table."""
    header, body = _table_rows(df)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in body
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>"


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


def render_html(title: str, sections: Sequence[Section]) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 PNG data URIs, escaped text."""
    esc = html.escape
    toc = "".join(
        f'<li><a href="#s{i}">{esc(s.heading)}</a></li>' for i, s in enumerate(sections, 1)
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        f"<nav><ol>{toc}</ol></nav>",
    ]
    for i, section in enumerate(sections, 1):
        parts.append(f'<section id="s{i}">\n<h2>{esc(section.heading)}</h2>')
        parts += [f"<p>{esc(p)}</p>" for p in section.text]
        parts += [_html_table(t) for t in section.tables]
        for j, figure in enumerate(section.figures, 1):
            data = base64.b64encode(_png_bytes(figure)).decode("ascii")
            alt = esc(f"{section.heading}, figure {j}")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"></figure>')
        parts.append("</section>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """Markdown report with pipe tables and image links to the sections' PNG paths."""
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"## {section.heading}")
        parts += list(section.text)
        parts += [markdown_table(t) for t in section.tables]
        # Percent-encoding keeps paths with spaces or parentheses valid link targets.
        parts += [f"![{section.heading}]({quote(Path(p).as_posix())})" for p in section.images]
    return "\n\n".join(parts) + "\n"
