"""What ResConv-Prune's records show: the layer-scale plot of a variant. (The side-by-side of a
residual parent and its fused plain variant on FINN's hardware estimates lives in the comparison
layer, `fpgaslim.compare.resconv`: compress/ does not look up into hw/.)"""

from __future__ import annotations

from pathlib import Path

from .resconv_fuse import PruneDecision


def plot_scales(decision: PruneDecision, lam: float, path: Path, title: str = "") -> Path:
    """Bar chart of |m_i| per ResConv layer (pruned ones marked, threshold drawn) and a
    histogram of m_i: the paper's figure 7 for one network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in decision.layers if r["m"] is not None]
    names = [r["name"] for r in rows]
    vals = [r["score"] if r.get("score") is not None else abs(r["m"]) for r in rows]
    colors = ["tab:red" if r["pruned"] else "tab:blue" for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    ax1.bar(range(len(vals)), vals, color=colors)
    ax1.axhline(decision.threshold, color="k", ls="--", lw=1,
                label=f"threshold {decision.threshold:.3g} (rate {decision.rate:.2f})")
    ax1.set_xticks(range(len(vals)), names, rotation=60, ha="right", fontsize=7)
    ax1.set_ylabel({"ratio": "pruning score rms(m BN(conv x)) / rms(g f(x))",
                    "strength": "pruning score |m_i| * mean|gamma_i|"}.get(
                        decision.by, "|m_i| (layer scale)"))
    ax1.set_xlabel("ResConv layer (red: pruned)")
    ax1.legend(fontsize=8)
    ax2.hist([r["m"] for r in rows], bins=max(5, len(rows) // 2), color="tab:gray")
    ax2.set_xlabel("m_i")
    ax2.set_ylabel("layers")
    fig.suptitle(f"{title} (lambda={lam:g}); measured: trained float ResConv net")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
