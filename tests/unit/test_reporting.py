"""Report rendering: markdown tables, the HTML twin, and plots that are real PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest

from eigenloop.reporting import line_plot, markdown_table, stacked_bar_plot, write_report


def test_markdown_table_formats_and_escapes() -> None:
    table = markdown_table(["model", "pass@1"], [["sft|v1", 0.41234], ["grpo", None]])
    assert table.splitlines() == ["| model | pass@1 |", "|---|---|", "| sft\\|v1 | 0.412 |", "| grpo | - |"]


def test_a_row_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="header has 2"):
        markdown_table(["a", "b"], [[1]])


def test_html_renders_the_same_tables_and_images(tmp_path: Path) -> None:
    plot = line_plot(
        tmp_path / "plots" / "reward.png",
        {"reward": ([0, 1, 2], [0.1, 0.5, 0.7])},
        title="t",
        xlabel="step",
        ylabel="r",
    )
    stacked_bar_plot(
        tmp_path / "plots" / "fail.png", ["r1", "r2"], {"policy": [3, 1], "dup": [2, 0]}, title="f", ylabel="n"
    )
    text = "# Run\n\n" + markdown_table(["a", "b"], [[1, 2]]) + "\n\n![reward](plots/reward.png)\n"
    md, html = write_report(tmp_path, text, "Run <1>")
    assert md.read_text() == text
    page = html.read_text()
    assert "<title>Run &lt;1&gt;</title>" in page and "<td>1</td>" in page and 'src="plots/reward.png"' in page
    assert plot.read_bytes().startswith(b"\x89PNG") and (tmp_path / "plots" / "fail.png").stat().st_size > 0


def test_stacks_must_match_the_categories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 categories"):
        stacked_bar_plot(tmp_path / "x.png", ["a", "b"], {"s": [1]}, title="t", ylabel="n")
