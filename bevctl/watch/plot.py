"""`--plot out.png`: the chosen metrics as matplotlib curves for reports. Train metrics: the raw points faint and the
smoothed line; validation metrics: the measured points only (never smoothed); every point at its logged x
(epochs, from the iteration within the epoch), epoch boundaries, the phase's expectation bands, `--compare` runs
overlaid, a log y axis when asked or when a curve spans more than 20x. matplotlib is an optional extra
(`bevctl[plot]`), imported only here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bevctl.errors import EnvironmentUnusable, UsageError
from bevctl.watch.chart import Curve, use_log

COLORS = ("tab:blue", "tab:orange", "tab:purple", "tab:red", "tab:brown")


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


def _xs(session: Any, name: str) -> tuple[list[float], bool]:
    series = session.state.series(name)
    xs = series.positions(session.state.iters_per_epoch())
    return (list(xs), True) if xs is not None else ([float(i + 1) for i in range(len(series.values))], False)


def write_plot(sessions: list, snaps: list[dict[str, Any]], out: str, view: dict[str, Any] | None = None) -> None:
    view = view or {}
    target = Path(out)
    if target.parent and not target.parent.exists():
        raise UsageError(f"folder {target.parent} does not exist", fix="create it or write the PNG elsewhere")
    plt = _pyplot()
    panels = [(s, snap, name) for s, snap in zip(sessions, snaps) for name in snap["metrics"]]
    if not panels:
        raise UsageError("no metrics to plot yet", fix="wait for the first logged step or choose --metric")
    overlays = view.get("overlays") or []
    # one x axis for all panels (epochs from the logged iteration): a curve and a validation point line up
    shared = all(s.state.series(n).positions(s.state.iters_per_epoch()) is not None for s, _, n in panels)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels)), squeeze=False, sharex=shared)
    for ax, (session, snap, name) in zip(axes[:, 0], panels):
        is_val = snap["metrics"][name]["source"] == "val"
        runs = [session] + [o for o in overlays if name in o.state.train_names or name in o.state.val_names]
        in_epochs = True
        curves = []
        for i, run in enumerate(runs):
            series = run.state.series(name)
            xs, known = _xs(run, name)
            in_epochs &= known
            color = COLORS[i % len(COLORS)]
            label = run.path.name if len(runs) > 1 else None
            curves.append(Curve(series.values))
            if is_val:
                ax.plot(xs, series.values, color=color, ls="none", marker="o", ms=4,
                        label=f"{label} (measured)" if label else "measured")
            else:
                ax.plot(xs, series.values, color=color, alpha=0.25, lw=0.8, label=f"{label} raw" if label else "raw")
                ax.plot(xs, series.smoothed, color=color, lw=1.6,
                        label=f"{label} EMA {run.state.smooth:g}" if label else f"EMA {run.state.smooth:g}")
        if in_epochs:
            lo, hi = ax.get_xlim()
            for b in range(max(1, math.ceil(lo)), math.floor(hi) + 1):
                ax.axvline(b, color="grey", lw=0.5, alpha=0.4)
        for band in session.state.bands():
            if band["metric"] != name:
                continue
            (e0, e1), tol = band["epochs"], band["tolerance"]
            ax.fill_between([e0, e1], [band["start"] - tol, band["end"] - tol],
                            [band["start"] + tol, band["end"] + tol], color="tab:green", alpha=0.15, lw=0)
            ax.plot([e0, e1], [band["start"], band["end"]], color="tab:green", lw=1, ls="--", label="expected")
        log = use_log(curves, view.get("log_y"))
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{snap['run']['name']}: {name}" + ("  (log y)" if log else ""), fontsize=9, loc="left")
        if not shared or ax is axes[-1, 0]:
            ax.set_xlabel("epoch (from the logged iteration)" if in_epochs else "logged step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.2)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
