"""The comparison's figures (matplotlib, Agg canvas, no pyplot global state).

Each figure says where its numbers come from in a footnote drawn into the image itself, so a
PNG that leaves the report still carries its provenance. Markers: colour = compression
method, shape = board; Pareto-optimal points (per board) are ringed and joined by a step line.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fpgaslim.hw.report import FIT_RESOURCES, HardwareReport, load_report

if TYPE_CHECKING:
    from .rows import ComparisonData, ComparisonRow

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
PYTORCH_ACC = "accuracy: measured in PyTorch (Brevitas QAT model, test split)"
FINN = "FINN estimate (finn-plus estimate reports)"


@dataclass
class NamedFigure:
    """A figure with a file-friendly name, a title and its source line (also in the image)."""

    name: str
    title: str
    source: str
    figure: Figure


def png_bytes(fig: NamedFigure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.figure.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _footnote(fig: Figure, source: str) -> None:
    fig.get_layout_engine().set(h_pad=0.1)
    fig.supxlabel("Source: " + source, fontsize=7.5, color="#444444", wrap=True)


def _styles(rows: Sequence[ComparisonRow]) -> tuple[dict[str, str], dict[str, str]]:
    """method -> colour, board -> marker, in order of first appearance."""
    methods = list(dict.fromkeys(r.method for r in rows))
    boards = list(dict.fromkeys(r.board_display for r in rows))
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    markers = {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(boards)}
    return colours, markers


def _label_groups(points: Sequence[tuple[float, float, str]], log_x: bool,
                  near: tuple[float, float] = (0.08, 0.05),
                  ) -> list[tuple[tuple[float, float], list[str]]]:
    """Points that would overlap on the plot (within `near` of the axis spans) share one
    stacked label, so coincident variants stay readable."""
    def fx(v: float) -> float:
        return math.log10(v) if log_x and v > 0 else v

    if not points:
        return []
    xs, ys = [fx(p[0]) for p in points], [p[1] for p in points]
    sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: list[tuple[tuple[float, float], list[str]]] = []
    for (px, py, label), nx, ny in zip(points, xs, ys):
        for (gx, gy), labels in groups:
            if abs(fx(gx) - nx) / sx < near[0] and abs(gy - ny) / sy < near[1]:
                if label not in labels:
                    labels.append(label)
                break
        else:
            groups.append(((px, py), [label]))
    return groups


def tradeoff(rows: Sequence[ComparisonRow], name: str, x: Callable[[ComparisonRow], float],
             xlabel: str, maximize_x: bool, source: str, log_x: bool = False) -> NamedFigure:
    """Accuracy against one cost/benefit, with the Pareto front of every board marked."""
    from .rows import pareto_front

    fig = _figure(7.0, 4.6)
    ax = fig.add_subplot()
    colours, markers = _styles(rows)
    multi = len({r.run for r in rows}) > 1
    for board, marker in markers.items():
        mine = [r for r in rows if r.board_display == board and r.accuracy is not None]
        for r in mine:
            ax.scatter(x(r), r.accuracy, marker=marker, s=60, color=colours[r.method],
                       edgecolors="black" if r.fits else "red", linewidths=0.6, zorder=3)
        front = [r for r, on in zip(mine, pareto_front([(r.accuracy, x(r)) for r in mine],
                                                        (True, maximize_x))) if on]
        front.sort(key=x, reverse=maximize_x)
        if front:
            ax.scatter([x(r) for r in front], [r.accuracy for r in front], s=190,
                       facecolors="none", edgecolors="#555555", linewidths=1.0, zorder=2)
            ax.step([x(r) for r in front], [r.accuracy for r in front], where="post",
                    color="#777777", linestyle="--", linewidth=0.9, zorder=1)
    points = [(x(r), r.accuracy, r.key if multi else r.variant) for r in rows
              if r.accuracy is not None]
    board_index = {b: i for i, b in enumerate(markers)}
    first_board = {(x(r), r.accuracy): board_index[r.board_display] for r in reversed(rows)
                   if r.accuracy is not None}
    for (px, py), labels in _label_groups(points, log_x):
        # labels of the second board go below their point, so equal-accuracy rows of two
        # boards do not print over each other
        below = first_board[px, py] % 2 == 1
        ax.annotate("\n".join(labels), (px, py), textcoords="offset points",
                    xytext=(7, -5 if below else 3), fontsize=7, color="#333333",
                    va="top" if below or len(labels) > 1 else "baseline")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.margins(x=0.15, y=0.15)
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=m)
               for m, c in colours.items()]
    handles += [Line2D([], [], marker=mk, linestyle="", color="grey", label=b)
                for b, mk in markers.items()]
    handles += [Line2D([], [], marker="o", linestyle="--", color="#777777",
                       markerfacecolor="none", markersize=11, label="Pareto front (per board)")]
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.85)
    better = "higher" if maximize_x else "lower"
    title = f"Accuracy vs {xlabel.split(' (')[0]} ({better} is better)"
    ax.set_title(title, fontsize=10)
    full = f"{source}; {PYTORCH_ACC}. Red edge: does not fit the board."
    _footnote(fig, full)
    return NamedFigure(name, title, full, fig)


ABBREVIATIONS = {"ConvolutionInputGenerator": "SWG", "DuplicateStreams": "DupStreams",
                 "ElementwiseAdd": "EltAdd", "ElementwiseMul": "EltMul",
                 "StreamingDataWidthConverter": "DWC", "StreamingMaxPool": "MaxPool"}


def _short(name: str) -> str:
    """Axis label of a FINN layer name: long op names abbreviated, the index kept."""
    for long, short in ABBREVIATIONS.items():
        name = name.replace(long, short)
    return name if len(name) <= 28 else name[:25] + "..."


def layer_resources(reports: Sequence[HardwareReport], variant: str) -> NamedFigure:
    """Per-layer LUT and BRAM_18K/URAM/DSP of one variant, one row of panels per board."""
    fig = _figure(14.0, 3.6 * len(reports) + 0.6)
    axes = fig.subplots(len(reports), 2, squeeze=False, width_ratios=(1, 1))
    for (ax_lut, ax_mem), rep in zip(axes, reports):
        names = [_short(la.name) for la in rep.layers]
        pos = range(len(names))
        ax_lut.bar(pos, [la.LUT for la in rep.layers], color="C0")
        ax_lut.set_ylabel("LUT")
        width = 0.27
        for i, (k, c) in enumerate((("BRAM_18K", "C1"), ("URAM", "C2"), ("DSP", "C3"))):
            ax_mem.bar([p + (i - 1) * width for p in pos], [getattr(la, k) for la in rep.layers],
                       width=width, color=c, label=k)
        ax_mem.set_ylabel("count")
        ax_mem.legend(fontsize=7)
        for ax, what in ((ax_lut, "LUT"), (ax_mem, "BRAM_18K / URAM / DSP")):
            ax.set_title(f"{variant} on {rep.board_display}: {what} per layer", fontsize=9)
            ax.set_xticks(list(pos), names, rotation=90, fontsize=6)
            ax.grid(axis="y", alpha=0.3)
    source = (f"{FINN}: estimate_layer_resources.json per HW layer of the folded dataflow "
              "graph (SWG = ConvolutionInputGenerator)")
    _footnote(fig, source)
    return NamedFigure("layer_resources", f"Per-layer resources of {variant}", source, fig)


def layer_cycles(reports: Sequence[HardwareReport], variant: str) -> NamedFigure:
    """Per-layer expected cycles of one variant, boards side by side; the slowest layer sets
    the throughput, so it is highlighted."""
    fig = _figure(14.0, 4.4)
    ax = fig.add_subplot()
    names = list(dict.fromkeys(la.name for rep in reports for la in rep.layers))
    width = 0.8 / max(1, len(reports))
    for i, rep in enumerate(reports):
        cyc = {la.name: la.cycles for la in rep.layers}
        xs = [p + (i - (len(reports) - 1) / 2) * width for p in range(len(names))]
        bars = ax.bar(xs, [cyc.get(n, 0) for n in names], width=width, color=f"C{i}",
                      label=f"{rep.board_display}:\nbottleneck "
                            f"{_short(rep.throughput.bottleneck_layer)},\n"
                            f"{rep.throughput.fps.value:,.0f} fps")
        if rep.throughput.bottleneck_layer in names:
            bars[names.index(rep.throughput.bottleneck_layer)].set_edgecolor("red")
            bars[names.index(rep.throughput.bottleneck_layer)].set_linewidth(1.5)
    ax.set_yscale("log")
    ax.set_ylabel("cycles per frame (log)")
    ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=90, fontsize=6)
    ax.grid(axis="y", alpha=0.3)
    title = f"Per-layer cycles of {variant} (red edge: bottleneck layer)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    source = f"{FINN}: estimate_layer_cycles.json (expected cycles per frame, per HW layer)"
    _footnote(fig, source)
    return NamedFigure("layer_cycles", title, source, fig)


def _pct_label(v: float) -> str:
    return "" if v == 0 else "<0.1" if v < 0.1 else f"{v:.1f}" if v < 10 else f"{v:.0f}"


def board_utilisation(rows: Sequence[ComparisonRow]) -> NamedFigure:
    """% of each board's LUT/DSP/BRAM_18K/URAM per variant, with the 100 % line."""
    boards = list(dict.fromkeys(r.board_display for r in rows))
    fig = _figure(14.0, 3.4 * len(boards) + 0.6)
    axes = fig.subplots(len(boards), 1, squeeze=False)[:, 0]
    for ax, board in zip(axes, boards):
        mine = [r for r in rows if r.board_display == board]
        width = 0.8 / len(FIT_RESOURCES)
        for i, k in enumerate(FIT_RESOURCES):
            xs = [p + (i - (len(FIT_RESOURCES) - 1) / 2) * width for p in range(len(mine))]
            vals = [r.percent.get(k, 0.0) for r in mine]
            bars = ax.bar(xs, vals, width=width, color=f"C{i}", label=k)
            ax.bar_label(bars, [_pct_label(v) for v in vals], fontsize=6, padding=1)
        ax.axhline(100, color="red", linewidth=1.2, linestyle="--", label="board capacity")
        ax.set_xticks(range(len(mine)), [f"{r.variant}\n({r.run})" if len({x.run for x in rows})
                                          > 1 else r.variant for r in mine], fontsize=8)
        ax.set_xlim(-0.6, max(len(mine), 2) - 0.4)  # one variant: keep its bars narrow
        ax.set_ylabel("% of board")
        top = max([100.0] + [v for r in mine for v in r.percent.values()])
        ax.set_ylim(0, top * 1.15)
        ax.set_title(f"{board}: resources as % of the board", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.grid(axis="y", alpha=0.3)
    source = (f"{FINN} totals over HW layers; capacities from the board catalogue "
              "(hw/boards.toml, vendor datasheets)")
    _footnote(fig, source)
    return NamedFigure("board_utilisation", "Resources against the board's capacity", source,
                       fig)


def _throughput(r: ComparisonRow) -> float:
    """The max-fit fps (the highest the board holds) where one was computed, else the
    default folding's."""
    return r.maxfit_fps if r.maxfit_fps is not None else r.fps


def _throughput_source(rows: Sequence[ComparisonRow], legend: dict[str, str]) -> str:
    n = sum(r.maxfit_fps is not None for r in rows)
    if n == 0:
        return "throughput: " + legend.get("fps", FINN)
    rest = "" if n == len(rows) else (f"; the other {len(rows) - n} points: default folding, "
                                      + legend.get("fps", FINN))
    return f"max-fit throughput ({n} of {len(rows)} points): {legend['maxfit_fps']}{rest}"


def comparison_figures(result: ComparisonData) -> list[NamedFigure]:
    """Every figure of the HTML report, in page order."""
    rows = result.rows
    legend = result.legend
    figs = [
        tradeoff(rows, "accuracy_vs_onchip", lambda r: r.onchip_bram18k_equiv,
                 "on-chip memory (BRAM_18K-equivalent)", False,
                 legend.get("onchip", FINN)),
        tradeoff(rows, "accuracy_vs_fps", _throughput, "max-fit throughput (frames/s, log)"
                 if any(r.maxfit_fps for r in rows) else "throughput (frames/s, log)", True,
                 _throughput_source(rows, legend), log_x=True),
        tradeoff(rows, "accuracy_vs_offchip", lambda r: r.offchip_bytes,
                 "off-chip traffic (bytes/frame, log)", False,
                 "off-chip: " + legend.get("offchip_bytes", FINN), log_x=True),
        board_utilisation(rows),
    ]
    if result.detail is not None:
        run, variant = result.detail
        reports = [load_report(r.report) for r in rows if (r.run, r.variant) == (run, variant)]
        name = f"{run}/{variant}" if len({r.run for r in rows}) > 1 else variant
        figs += [layer_resources(reports, name), layer_cycles(reports, name)]
    return figs
