"""Pictures of a `weight_pattern` objective: target S, decoded sign(Δ) and per-pixel loss, side by side."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def save_pattern_png(objective, model, params, path, title: str | None = None) -> Path:
    """Save the three heatmaps of `objective` at `params` to `path` (PNG, written atomically). Returns the path."""
    # Imported here so that `import objectives` stays light. The object-oriented API with an explicit Agg canvas:
    # no pyplot, no global backend switch, no display needed, safe to call from any thread at any step.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not hasattr(objective, "maps") or not hasattr(objective, "resolve"):
        raise ValueError("objective: save_pattern_png needs a weight_pattern objective, "
                         f"got {type(objective).__name__}")
    maps = objective.maps(model, params)
    name, layout = objective.resolve(model)
    h, w = maps["target"].shape
    # Axis ticks show real indices: hidden dims × token ids for the head, rows × columns of the weight otherwise.
    extent = (objective.col - 0.5, objective.col + w - 0.5, objective.row + h - 0.5, objective.row - 0.5)
    ylabel, xlabel = ("hidden dim", "token id") if layout == "hidden_by_vocab" else ("row", "column")
    accuracy = objective.proxies(model, params)["pixel_accuracy"]

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    panels = [("target S", maps["target"], "gray", (-1, 1)),
              (f"decoded sign(Δ), accuracy {accuracy:.3f}", maps["decoded"], "gray", (-1, 1)),
              ("per-pixel loss", maps["loss"], "magma", (0, None))]
    for ax, (label, data, cmap, (lo, hi)) in zip(axes, panels):
        im = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=axes[2], shrink=0.8)
    fig.suptitle(title or f"{name} ({layout})", fontsize=10)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temp file in the same directory, then os.replace: readers never see a half-written PNG.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
