"""Report rendering: self-contained HTML and Markdown with linked PNGs."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from samples import PNG_MAGIC

from cxrlab.experiments.evaluation.report import (
    Section,
    figure_png,
    render_html,
    render_markdown,
    save_figure,
)


def small_figure() -> Figure:
    """A tiny pyplot-free figure."""
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def sections(png_path: Path | None = None) -> list[Section]:
    """Two sections: metrics table + text with markup, and figures."""
    table = pd.DataFrame(
        {"class": ["covid", "normal"], "recall": [0.91234, float("nan")], "support": [17, 23]}
    )
    indexed = pd.DataFrame({"auc": [0.5]}, index=pd.Index(["macro"], name="average"))
    figures: list = [small_figure(), figure_png(small_figure())]
    if png_path is not None:
        figures.append(png_path)
    return [
        Section(
            "Metrics <b>",
            text=["Sensitivity <script>alert(1)</script> & specificity", "Second | paragraph"],
            tables=[table, indexed],
        ),
        Section(
            "Curves", text="Only one paragraph", figures=figures, images=["figs/roc curve.png"]
        ),
    ]


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    png_file = save_figure(small_figure(), tmp_path / "f.png")
    page = render_html("Evaluation <report>", sections(png_file))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert 'src="http' not in page and 'href="http' not in page and "<link" not in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 3
    assert all(base64.b64decode(u).startswith(PNG_MAGIC) for u in uris)
    assert base64.b64decode(uris[2]) == png_file.read_bytes()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; specificity" in page
    assert "<title>Evaluation &lt;report&gt;</title>" in page
    assert "<h2>Metrics &lt;b&gt;</h2>" in page
    assert "<p>Only one paragraph</p>" in page
    for cell in ("<td>covid</td>", "<td>0.9123</td>", "<td>17</td>", "<td>23</td>", "<td>—</td>"):
        assert cell in page
    # A named index becomes the first column; a default 0..n-1 index does not.
    assert "<th>average</th><th>auc</th>" in page and "<td>macro</td><td>0.5</td>" in page
    assert "<th>class</th><th>recall</th><th>support</th>" in page


def test_markdown_tables_and_image_links() -> None:
    md = render_markdown("Evaluation", sections())
    lines = md.splitlines()
    assert lines[0] == "# Evaluation"
    assert "## Metrics <b>" in lines and "## Curves" in lines
    assert "| class | recall | support |" in lines
    assert "| --- | --- | --- |" in lines
    assert "| covid | 0.9123 | 17 |" in lines
    assert "| normal | — | 23 |" in lines
    assert "| average | auc |" in lines and "| macro | 0.5 |" in lines
    assert "Second | paragraph" in lines and "Only one paragraph" in lines
    assert "![Curves](figs/roc%20curve.png)" in lines
    assert "base64" not in md


def test_markdown_escapes_pipes_in_cells() -> None:
    md = render_markdown("t", [Section("s", tables=[pd.DataFrame({"a|b": ["x|y"]})])])
    assert "| a\\|b |" in md and "| x\\|y |" in md


def test_save_figure_writes_png_and_closes(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = save_figure(fig, tmp_path / "nested" / "roc.png")
    assert path == tmp_path / "nested" / "roc.png"
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert not plt.fignum_exists(fig.number)
