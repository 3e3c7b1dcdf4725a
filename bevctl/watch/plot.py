"""`--plot out.png`: the chosen metrics as matplotlib curves for reports (raw + smoothed, epoch boundaries,
the phase's expectation bands). matplotlib is an optional extra (`bevctl[plot]`), imported only here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bevctl.errors import EnvironmentUnusable, UsageError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise EnvironmentUnusable(
            "--plot needs matplotlib, which is not installed", fix="pip install 'bevctl[plot]'"
        ) from None
    return plt


def _x_axis(epochs: list[Any]) -> tuple[list[float], list[float]]:
    """x in epochs (epoch e spans (e-1, e]) from the epoch of each point; points of one epoch spread evenly."""
    xs: list[float] = []
    boundaries: list[float] = []
    i, n = 0, len(epochs)
    while i < n:
        j = i
        while j < n and epochs[j] == epochs[i]:
            j += 1
        epoch = epochs[i] if isinstance(epochs[i], int) else None
        count = j - i
        for k in range(count):
            xs.append((epoch - 1 + (k + 1) / count) if epoch is not None else float(i + k))
        if epoch is not None and i:
            boundaries.append(epoch - 1.0)
        i = j
    return xs, boundaries


def write_plot(sessions: list, snaps: list[dict[str, Any]], out: str) -> None:
    target = Path(out)
    if target.parent and not target.parent.exists():
        raise UsageError(f"folder {target.parent} does not exist", fix="create it or write the PNG elsewhere")
    plt = _pyplot()
    panels = [(s, snap, name) for s, snap in zip(sessions, snaps) for name in snap["metrics"]]
    if not panels:
        raise UsageError("no metrics to plot yet", fix="wait for the first logged step or choose --metric")
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), squeeze=False)
    for ax, (session, snap, name) in zip(axes[:, 0], panels):
        series = session.state.series(name)
        xs, boundaries = _x_axis(series.epochs)
        source = snap["metrics"][name]["source"]
        marker = "o" if source == "val" else None
        ax.plot(xs, series.values, color="tab:blue", alpha=0.3, lw=0.8, marker=marker, label="raw")
        ax.plot(xs, series.smoothed, color="tab:blue", lw=1.6, label=f"EMA {session.state.smooth:g}")
        for b in boundaries:
            ax.axvline(b, color="grey", lw=0.5, alpha=0.4)
        for band in session.state.bands():
            if band["metric"] != name:
                continue
            (e0, e1), tol = band["epochs"], band["tolerance"]
            ax.fill_between([e0, e1], [band["start"] - tol, band["end"] - tol], [band["start"] + tol, band["end"] + tol],
                            color="tab:green", alpha=0.15, lw=0)
            ax.plot([e0, e1], [band["start"], band["end"]], color="tab:green", lw=1, ls="--")
        ax.set_title(f"{snap['run']['name']}: {name}", fontsize=9, loc="left")
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right")
        ax.grid(alpha=0.2)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
