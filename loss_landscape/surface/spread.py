"""How much a 1D landscape depends on the random direction drawn: statistics across directions.

Pure numpy on plain arrays: ``values`` has one row per direction on a shared grid ``x``. Standard
deviations are sample ones (the directions are a sample), and results are JSON-ready dicts.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from loss_landscape.errors import SurfaceError

STD_DDOF = 1  # the spread across directions is a sample of directions: sample standard deviation

def band_statistics(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per grid point, over the directions (rows) with a finite value: mean, std, min, max and count.

    `std` is the sample standard deviation (ddof=1), NaN with fewer than 2 values; the others are
    NaN where no direction has a value.

    Example:
        >>> band_statistics(np.array([[1.0, 2.0], [3.0, np.nan]]))["mean"]
        array([2., 2.])
    """
    v = np.atleast_2d(np.asarray(values, dtype=float))
    v = np.where(np.isfinite(v), v, np.nan)
    count = np.isfinite(v).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are expected: gaps
        mean = np.nanmean(v, axis=0)
        std = np.nanstd(v, axis=0, ddof=STD_DDOF)
        lo = np.nanmin(v, axis=0)
        hi = np.nanmax(v, axis=0)
    std = np.where(count > STD_DDOF, std, np.nan)
    return {"mean": mean, "std": std, "min": lo, "max": hi, "count": count}


def basin_width(x: np.ndarray, y: np.ndarray, *, delta: float, centre: float = 0.0) -> dict:
    """The interval around the grid point nearest `centre` where y < y(centre) + delta.

    Its ends are found by linear interpolation between grid points, so that directions sampled on
    one grid are compared without rounding to the spacing (surface_stats.sharpness_1d's ``interval``
    stops at the last grid point below instead). An end that reaches the grid's edge or a point not
    computed (NaN) is open: the true interval is at least that wide there.

    Args:
        x: grid, ascending.
        y: values on the grid.
        delta: rise of y that ends the interval (> 0).
        centre: where the interval starts (default 0, the trained model).

    Returns:
        ``{"centre", "left", "right", "width", "open_left", "open_right"}``; NaN width when y is
        not known at the centre.

    Example:
        >>> basin_width(np.linspace(-1, 1, 5), np.array([4.0, 1, 0, 1, 4]), delta=0.5)["width"]
        0.5
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if not delta > 0:
        raise SurfaceError(f"the basin width needs delta > 0, got {delta}")
    i0 = int(np.argmin(np.abs(x - centre)))
    out = {"centre": float(x[i0]), "left": math.nan, "right": math.nan, "width": math.nan, "open_left": False,
           "open_right": False}
    if not np.isfinite(y[i0]):
        return out
    level = y[i0] + delta

    def walk(step: int) -> tuple[float, bool]:
        i = i0
        while 0 <= i + step < len(x):
            j = i + step
            if not np.isfinite(y[j]):
                return float(x[i]), True
            if y[j] >= level:  # y[i] < level <= y[j]: the crossing lies between them
                return float(x[i] + (level - y[i]) / (y[j] - y[i]) * (x[j] - x[i])), False
            i = j
        return float(x[i]), True

    (out["left"], out["open_left"]), (out["right"], out["open_right"]) = walk(-1), walk(+1)
    out["width"] = out["right"] - out["left"]
    return out


def _summary(values) -> dict:
    v = np.asarray(values, dtype=float)
    ok = v[np.isfinite(v)]
    return {"values": v.tolist(), "mean": float(ok.mean()) if ok.size else math.nan,
            "std": float(ok.std(ddof=STD_DDOF)) if ok.size > STD_DDOF else math.nan,
            "min": float(ok.min()) if ok.size else math.nan, "max": float(ok.max()) if ok.size else math.nan}


def direction_spread(x: np.ndarray, values: np.ndarray, *, accs: np.ndarray | None = None, delta: float = 1.0,
                     centre: float = 0.0, names: list[str] | None = None) -> dict:
    """How much a 1D landscape depends on the random direction drawn.

    Args:
        x: the shared grid (nx,), ascending.
        values: the loss (or other quantity) along each direction, shape (n_directions, nx).
        accs: the accuracies, same shape (optional).
        delta: the loss rise that defines the basin width (see `basin_width`).
        centre: the trained model's coordinate.
        names: one name per direction (default "0", "1", ...).

    Returns:
        A JSON-ready dict: ``per_x`` (mean, std, min, max, count of the values at each x, and the
        same for accuracy under ``accuracy_per_x``), and ``summary``: the values at the centre and
        at both grid ends (each with mean, std, min, max over the directions), the basin width per
        direction and its statistics, and where along x the std is largest. Standard deviations are
        sample ones (ddof=1); missing numbers are NaN (null in JSON).

    Example:
        >>> s = direction_spread(np.linspace(-1, 1, 3), np.array([[2.0, 0, 2], [4.0, 0, 3]]))
        >>> s["summary"]["right_end"]["mean"]
        2.5
    """
    x = np.asarray(x, dtype=float)
    values = np.atleast_2d(np.asarray(values, dtype=float))
    n = values.shape[0]
    names = list(names) if names is not None else [str(k) for k in range(n)]
    stats = band_statistics(values)
    widths = [basin_width(x, row, delta=delta, centre=centre) for row in values]
    i0 = int(np.argmin(np.abs(x - centre)))
    std = stats["std"]
    imax = int(np.nanargmax(std)) if np.isfinite(std).any() else None
    basin = _summary([w["width"] for w in widths])
    basin.update(delta=float(delta), left=[w["left"] for w in widths], right=[w["right"] for w in widths],
                open=[w["open_left"] or w["open_right"] for w in widths])
    out = {
        "n_directions": n,
        "directions": names,
        "std_ddof": STD_DDOF,
        "summary": {
            "centre": {"x": float(x[i0]), **_summary(values[:, i0])},
            "left_end": {"x": float(x[0]), **_summary(values[:, 0])},
            "right_end": {"x": float(x[-1]), **_summary(values[:, -1])},
            "basin_width": basin,
            "largest_std": {"x": float(x[imax]) if imax is not None else math.nan,
                            "std": float(std[imax]) if imax is not None else math.nan},
        },
        "x": x.tolist(),
        "per_x": {k: v.tolist() for k, v in stats.items()},
    }
    if accs is not None:
        out["accuracy_per_x"] = {k: v.tolist() for k, v in band_statistics(accs).items()}
    return out


def spread_lines(spread: dict, *, surf_name: str = "train_loss") -> list[str]:
    """A few readable lines summarizing `surface.spread`'s result (what the command prints)."""
    s = spread["summary"]

    def stat(d: dict) -> str:
        return f"mean {d['mean']:.4g}, std {d['std']:.3g}, min {d['min']:.4g}, max {d['max']:.4g}"

    w = s["basin_width"]
    n_open = sum(w["open"])
    lines = [f"{surf_name} along {spread['n_directions']} directions on {len(spread['x'])} points "
             f"(std over directions, ddof={spread['std_ddof']}):",
             f"  at x={s['centre']['x']:g} (centre): {stat(s['centre'])}",
             f"  at x={s['left_end']['x']:g} (left end): {stat(s['left_end'])}",
             f"  at x={s['right_end']['x']:g} (right end): {stat(s['right_end'])}",
             f"  basin width (x around the centre where {surf_name} < centre + {w['delta']:g}): {stat(w)}"
             + (f"; {n_open} of {spread['n_directions']} stop at the grid's edge or a gap (at least that wide)"
                if n_open else ""),
             f"  largest std {s['largest_std']['std']:.3g} at x={s['largest_std']['x']:g}"]
    c = s["centre"]
    if np.isfinite(c["min"]) and c["max"] - c["min"] > 1e-3 * abs(c["mean"]) + 1e-12:
        lines.append(f"  note: the values at x={c['x']:g} differ across the files; are they all of one model?")
    for name, lo, hi, width in zip(spread["directions"], s["left_end"]["values"], s["right_end"]["values"],
                                   w["values"]):
        lines.append(f"    {name}: left end {lo:.4g}, right end {hi:.4g}, basin width {width:.3g}")
    return lines


def jsonable(obj):
    """`obj` with NaN/inf as None and numpy scalars as Python numbers, for ``json.dump``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return obj
