"""One matplotlib style for every figure: paper column width (3.4 in), readable fonts, PNG + PDF output."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
FIGURES = ROOT / "paper_figs"
COLUMN_WIDTH = 3.4  # inches, one column of a two-column paper
FULL_WIDTH = 7.0

plt.rcParams.update({
    "figure.dpi": 150, "savefig.dpi": 300, "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
    "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2,
    "lines.markersize": 3.5, "axes.grid": True, "grid.alpha": 0.3, "figure.constrained_layout.use": True,
})


def load_json(relative: str) -> dict:
    """Read a saved result under ``results/`` (FileNotFoundError names the missing file)."""
    with open(RESULTS / relative, encoding="utf-8") as handle:
        return json.load(handle)


def figure(width: float = COLUMN_WIDTH, height: float = 2.4, **kwargs):
    return plt.subplots(figsize=(width, height), **kwargs)


def save(fig, name: str) -> None:
    """Write ``paper_figs/<name>.png`` and ``.pdf``; the PDF without a creation date, so the same results give the same
    bytes (a rebuild changes no committed figure whose data did not change)."""
    fig.savefig(FIGURES / f"{name}.png", bbox_inches="tight")
    fig.savefig(FIGURES / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
