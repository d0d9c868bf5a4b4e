"""Writers of a comparison: CSV (raw values), Markdown and a rich Table (formatted, with the
legend of sources), and one self-contained HTML page: inline CSS, plots as base64 PNG, no
scripts, no external resources, so it opens from file:// (or an e-mail attachment) offline."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .rows import COLUMNS, Column, ComparisonRow

if TYPE_CHECKING:
    from .rows import ComparisonData
    from .plots import NamedFigure

def cell(row: ComparisonRow, col: Column, multi_run: bool = False) -> str:
    """Human formatting of one cell (Markdown, rich, HTML); empty when the value is None.
    With rows from several runs the variant shows as run/variant (ids repeat across runs)."""
    value = getattr(row, col.key)
    if col.key == "variant" and multi_run:
        return row.key
    if col.key == "maxfit_fps" and row.maxfit_none_fits:
        return "none fits"
    if col.key == "sim_fps" and value is None and row.sim_note:
        return row.sim_note
    if value is None:
        return ""
    if col.key == "fits":
        return "yes" if value else "NO: " + ", ".join(row.overflow)
    if col.key == "hw_accuracy" and row.hw_accuracy_images is not None:
        return f"{col.fmt.format(value)} on {row.hw_accuracy_images:,} images"
    text = col.fmt.format(value)
    pct = row.percent.get(col.key)
    return f"{text} ({pct:.1f}%)" if pct is not None else text


def _multi_run(rows: Sequence[ComparisonRow]) -> bool:
    return len({r.run for r in rows}) > 1


CSV_EXTRA = ("run", "parent", "dataset", "board_display", "build", "test_images",
             "onchip_bram18k_equiv", "weight_bits_onchip", "bandwidth_percent", "bottleneck",
             "status", "maxfit_none_fits", "maxfit_method", "maxfit_URAM", "verified",
             "hw_accuracy_images", "sim_note", "report")


def to_csv(rows: Sequence[ComparisonRow]) -> str:
    """Raw values (no rounding), one row per (variant, board); % of board as *_pct columns."""
    keys = [c.key for c in COLUMNS] + [f"{k}_pct" for k in ("BRAM_18K", "URAM", "LUT", "DSP")]
    keys += list(CSV_EXTRA)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    for r in rows:
        data = r.model_dump()
        out = []
        for k in keys:
            v = r.percent.get(k[:-4]) if k.endswith("_pct") else data[k]
            out.append("" if v is None else repr(v) if isinstance(v, float) else v)
        w.writerow(out)
    return buf.getvalue()


def to_markdown(rows: Sequence[ComparisonRow], legend: dict[str, str]) -> str:
    """A Markdown table plus the legend of sources."""
    head = [c.header for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    multi = _multi_run(rows)
    for r in rows:
        cells = [cell(r, c, multi).replace("|", "\\|") for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Sources:", ""]
    lines += [f"- **{legend_name(k)}**: {v}" for k, v in legend.items()]
    return "\n".join(lines) + "\n"


LEGEND_NAMES = {"onchip": "on-chip memory (plots)", "percent": "(%) of board"}


def legend_name(key: str) -> str:
    return next((c.header for c in COLUMNS if c.key == key), LEGEND_NAMES.get(key, key))


def rich_table(rows: Sequence[ComparisonRow], legend: dict[str, str]) -> Any:
    """A rich Table whose column headers carry footnote marks [n]; the caption lists every
    distinct source in full under its mark (sources are never cut to the column width)."""
    from rich.table import Table

    notes: dict[str, int] = {}
    marks = {}
    for c in COLUMNS:
        if c.key in legend:
            marks[c.key] = notes.setdefault(legend[c.key], len(notes) + 1)
    if "percent" in legend:
        notes.setdefault("(%): " + legend["percent"], len(notes) + 1)
    caption = "\n".join(f"[{n}] {text}" for text, n in notes.items())
    t = Table(title="Variants x boards", caption=caption or None, caption_justify="left")
    for c in COLUMNS:
        head = f"{c.header} [{marks[c.key]}]" if c.key in marks else c.header
        t.add_column(head, justify="left" if c.fmt == "{}" else "right", overflow="fold")
    multi = _multi_run(rows)
    for r in rows:
        t.add_row(*[cell(r, c, multi) for c in COLUMNS], style=None if r.fits else "red")
    return t


# --------------------------------------------------------------------------- HTML
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px;
       color: #1d1d1f; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.meta { color: #555; font-size: 0.9em; margin-top: 0; }
table.cmp { border-collapse: collapse; font-size: 12px; }
table.cmp th, table.cmp td { border: 1px solid #d0d0d0; padding: 3px 6px; white-space: nowrap; }
table.cmp th { white-space: normal; vertical-align: bottom; }
table.cmp th { background: #f0f2f5; position: sticky; top: 0; }
table.cmp td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.cmp tr.nofit td { background: #fdecea; }
table.cmp tr:hover td { background: #eef5ff; }
.scroll { overflow-x: auto; }
dl.legend { font-size: 12px; display: grid; grid-template-columns: max-content auto;
            gap: 2px 12px; }
dl.legend dt { font-weight: 600; }
dl.legend dd { margin: 0; color: #333; }
.figs { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #e3e3e3; padding: 8px; background: #fff; }
figure.half { flex: 0 0 640px; }
figure.full { flex: 0 0 1300px; }
figure img { width: 100%; display: block; }
figcaption { font-size: 12px; color: #444; margin-top: 4px; }
ul.skipped { font-size: 12px; color: #8a4b00; }
"""

# figures shown side by side (two per row); the others take the full width
HALF_WIDTH = ("accuracy_vs_onchip", "accuracy_vs_fps", "accuracy_vs_offchip")


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(result: ComparisonData) -> str:
    multi = len({r.run for r in result.rows}) > 1

    head = "".join(f'<th title="{_esc(result.legend.get(c.key, ""))}">{_esc(c.header)}</th>'
                   for c in COLUMNS)
    body = []
    for r in result.rows:
        tds = []
        for c in COLUMNS:
            numeric = c.fmt != "{}"
            text = cell(r, c, multi)
            tds.append(f'<td class="{"num" if numeric else "txt"}">{_esc(text)}</td>')
        cls = "row" if r.fits else "row nofit"
        body.append(f'<tr class="{cls}" data-variant="{_esc(r.key)}" '
                    f'data-board="{_esc(r.board)}">{"".join(tds)}</tr>')
    return (f'<div class="scroll"><table class="cmp" id="comparison"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


def _legend(result: ComparisonData) -> str:
    items = "".join(f"<dt>{_esc(legend_name(k))}</dt><dd>{_esc(v)}</dd>"
                    for k, v in result.legend.items())
    return f'<dl class="legend">{items}</dl>'


def _figure(fig: NamedFigure) -> str:
    from .plots import png_bytes

    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    cls = "half" if fig.name in HALF_WIDTH else "full"
    return (f'<figure class="{cls}" id="fig-{_esc(fig.name)}"><img class="plot" '
            f'alt="{_esc(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{_esc(fig.title)}.</b> Source: {_esc(fig.source)}</figcaption>"
            "</figure>")


def render_html(result: ComparisonData, figures: Sequence[NamedFigure]) -> str:
    """The whole page as a string."""
    rows = result.rows
    variants = list(dict.fromkeys(r.key for r in rows))
    boards = list(dict.fromkeys(r.board_display for r in rows))
    datasets = sorted({r.dataset for r in rows})
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>fpgaslim: variant comparison</title>", f"<style>{CSS}</style></head><body>",
        "<h1>Variant comparison</h1>",
        f'<p class="meta">{len(variants)} variants x {len(boards)} boards '
        f"({_esc(', '.join(boards))}); dataset {_esc(', '.join(datasets))}; runs "
        f"{_esc(', '.join(dict.fromkeys(r.run for r in rows)))}; generated {now} from saved "
        "variant records and hardware reports (nothing was rebuilt). Hardware figures are "
        "FINN estimates, not post-synthesis or on-board measurements.</p>",
        "<h2>Table: one row per variant and board</h2>", _table(result),
        "<h3>Where each column comes from</h3>", _legend(result),
    ]
    if result.skipped:
        items = "".join(f"<li>{_esc(s.path)}: {_esc(s.reason)}</li>" for s in result.skipped)
        parts.append(f'<h3>Not shown (unreadable)</h3><ul class="skipped">{items}</ul>')
    tradeoffs = [f for f in figures if f.name in HALF_WIDTH]
    others = [f for f in figures if f.name not in HALF_WIDTH]
    if tradeoffs:
        parts += ["<h2>Accuracy against cost</h2>", '<div class="figs">',
                  *map(_figure, tradeoffs), "</div>"]
    if others:
        detail = f" (per-layer plots: {_esc('/'.join(result.detail))})" if result.detail else ""
        parts += [f"<h2>Resources and layers{detail}</h2>", '<div class="figs">',
                  *map(_figure, others), "</div>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
