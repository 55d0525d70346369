"""Numbers computed from a sampled loss surface: critical points of the grid and sharpness summaries.

Pure numpy on plain arrays (no files, no plotting), so every number that plot_1D.py and plot_2D.py print
can be checked by hand on an analytic surface. 2D values follow the surface file's orientation: ``z[j, i]``
is the value at ``(x[i], y[j])``, shape ``(len(y), len(x))``. Non-finite values (NaN: not computed or
diverged; inf) are missing points. Every definition is about the sampled grid points only, with no
interpolation between them; doc/plot_2d.md states the same definitions for users.

Results are plain dicts and lists of Python floats, ints, bools and None (for "undefined"), ready for
``json.dump``.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np

DEFAULT_RADII = (0.1, 0.25, 0.5, 1.0)
DEFAULT_DELTA = 1.0

# The 8 neighbours of a grid point as (dj, di), in cyclic order counter-clockwise from east, so that
# consecutive entries are adjacent on the ring around the point.
RING = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))

# Distances are compared with this relative slack, so that a grid point meant to lie exactly at radius r
# (0.3 from linspace is 0.30000000000000004) counts as within r.
_RTOL = 1e-9


def _as_grid(x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    z = np.asarray(z, dtype=float)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"x and y must be 1D coordinate arrays, got shapes {x.shape} and {y.shape}")
    if z.shape != (len(y), len(x)):
        raise ValueError(f"values must have shape (len(y), len(x)) = {(len(y), len(x))}, got {z.shape}")
    return x, y, z


def _as_line(x, loss) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    loss = np.asarray(loss, dtype=float)
    if x.ndim != 1 or loss.shape != x.shape:
        raise ValueError(f"x and loss must be 1D arrays of the same length, got shapes {x.shape} and {loss.shape}")
    return x, loss


def _num(v) -> Optional[float]:
    """A JSON-safe float: None for NaN or inf."""
    v = float(v)
    return v if math.isfinite(v) else None


# ----------------------------------------------------------------------------------------------------------
# Critical points
# ----------------------------------------------------------------------------------------------------------

def critical_points(x, y, z, *, tol: Optional[float] = None) -> list[dict]:
    """Local minima, maxima and saddles of the sampled surface, found on the grid.

    Discrete definition: only interior grid points whose value and 8 neighbours are all finite are
    classified (edge points, and points next to a NaN or inf, never are). Let d_k = z(neighbour k) - z(point)
    for the 8 neighbours taken in order around the ring (E, NE, N, NW, W, SW, S, SE); differences with
    ``|d_k| <= tol`` are ties.

    - minimum: every d_k > tol (strictly below all 8 neighbours);
    - maximum: every d_k < -tol (strictly above all 8 neighbours);
    - saddle: neither, and the sign of d_k changes at least 4 times going once round the ring, ties
      skipped (a regular slope changes sign twice; x^2 - y^2 at 0 four times; a monkey saddle six).

    A flat patch (ties) is therefore neither a minimum nor a maximum. On a grid coarse for the surface,
    points next to a degenerate critical point can qualify too (x^3 - 3xy^2 gives saddles at (0, +-h) besides
    the centre, whatever the spacing h).

    Args:
        x: (nx,) coordinates; y: (ny,) coordinates; z: (ny, nx) values, z[j, i] at (x[i], y[j]).
        tol: differences at most this large count as ties; default 1e-12 times the largest finite |z|,
            so that rounding of the grid coordinates does not make spurious sign changes.

    Returns:
        A list of {"kind": "minimum" | "maximum" | "saddle", "i", "j", "x", "y", "value"} in row-major
        order (by j, then i).

    Example:
        >>> g = np.linspace(-1, 1, 5)
        >>> X, Y = np.meshgrid(g, g)
        >>> [(p["kind"], p["x"], p["y"]) for p in critical_points(g, g, X**2 - Y**2)]
        [('saddle', 0.0, 0.0)]
    """
    x, y, z = _as_grid(x, y, z)
    ny, nx = z.shape
    if nx < 3 or ny < 3:
        return []
    finite = np.isfinite(z)
    if tol is None:
        tol = 1e-12 * (float(np.abs(z[finite]).max()) if finite.any() else 0.0)
    centre = z[1:-1, 1:-1]
    with np.errstate(invalid="ignore"):
        d = np.stack([z[1 + dj:ny - 1 + dj, 1 + di:nx - 1 + di] - centre for dj, di in RING])
        sign = np.where(d > tol, 1, np.where(d < -tol, -1, 0))
    valid = np.isfinite(d).all(axis=0) & np.isfinite(centre)
    minimum = valid & (sign == 1).all(axis=0)
    maximum = valid & (sign == -1).all(axis=0)
    saddle = valid & ~minimum & ~maximum & (_ring_sign_changes(sign) >= 4)
    kind = np.full(centre.shape, "", dtype=object)
    kind[minimum], kind[maximum], kind[saddle] = "minimum", "maximum", "saddle"
    out = []
    for jj, ii in zip(*np.nonzero(kind != "")):
        j, i = int(jj) + 1, int(ii) + 1
        out.append({"kind": kind[jj, ii], "i": i, "j": j, "x": float(x[i]), "y": float(y[j]),
                    "value": float(z[j, i])})
    return out


def _ring_sign_changes(sign: np.ndarray) -> np.ndarray:
    """Sign changes going once round each ring (axis 0, cyclic), zeros skipped."""
    filled = sign.copy()
    n = len(filled)
    # Replace each zero by the last non-zero sign before it, cyclically; two rounds reach every zero.
    for _ in range(2):
        for k in range(n):
            filled[k] = np.where(filled[k] == 0, filled[k - 1], filled[k])
    prev = np.roll(filled, 1, axis=0)
    return ((filled != prev) & (filled != 0) & (prev != 0)).sum(axis=0)


def count_kinds(points: Iterable[dict]) -> dict:
    """{"minimum": n, "maximum": n, "saddle": n} for a list from `critical_points`."""
    counts = {"minimum": 0, "maximum": 0, "saddle": 0}
    for p in points:
        counts[p["kind"]] += 1
    return counts


# ----------------------------------------------------------------------------------------------------------
# Sharpness
# ----------------------------------------------------------------------------------------------------------

def _disc_summary(dist: np.ndarray, values: np.ndarray, centre_value: float, *, radii: Sequence[float],
                  cover: float, delta: float) -> dict:
    """Rise within radii and basin radius from distances to the centre and values (flat arrays)."""
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    if any(not r >= 0 for r in radii):
        raise ValueError(f"radii must be >= 0, got {list(radii)}")
    used = sorted({min(float(r), cover) for r in radii})
    finite = np.isfinite(values)
    rise = []
    for r in used:
        inside = dist <= r * (1 + _RTOL)
        ok = inside & finite
        top = (values[ok] - centre_value).max() if ok.any() and math.isfinite(centre_value) else math.nan
        rise.append({"r": r, "rise": _num(top), "points": int(inside.sum()), "missing": int((inside & ~finite).sum())})
    out = {"max_radius": float(cover), "rise": rise, "delta": float(delta)}
    if not math.isfinite(centre_value):
        out.update(threshold=None, basin_radius=None, basin_open=None, fraction_below=None)
        return out
    threshold = centre_value + delta
    below = finite & (values < threshold)
    first_bad = dist[~below].min() if (~below).any() else math.inf
    within = (dist < first_bad * (1 - _RTOL)) & (dist <= cover * (1 + _RTOL))
    out.update(threshold=float(threshold), basin_radius=float(min(dist[within].max(), cover)),
               basin_open=bool(first_bad > cover * (1 + _RTOL)),
               fraction_below=float(below.sum() / values.size))
    return out


def _interval_below(coords: np.ndarray, values: np.ndarray, k: int, threshold: Optional[float]) -> Optional[dict]:
    """The run of consecutive grid points through index k with values below threshold."""
    if threshold is None or not (np.isfinite(values[k]) and values[k] < threshold):
        return None
    with np.errstate(invalid="ignore"):
        below = np.isfinite(values) & (values < threshold)
    lo = hi = k
    while lo > 0 and below[lo - 1]:
        lo -= 1
    while hi < len(values) - 1 and below[hi + 1]:
        hi += 1
    return {"lo": float(coords[lo]), "hi": float(coords[hi]), "width": float(coords[hi] - coords[lo]),
            "lo_at_edge": lo == 0, "hi_at_edge": hi == len(values) - 1}


def centre_index_2d(x, y) -> tuple[int, int]:
    """(j, i) of the grid point nearest to (0, 0); ties go to the first in row-major order
    (smallest y, then smallest x)."""
    X, Y = np.meshgrid(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    j, i = np.unravel_index(int(np.argmin(np.hypot(X, Y))), X.shape)
    return int(j), int(i)


def sharpness_2d(x, y, z, *, radii: Sequence[float] = DEFAULT_RADII, delta: float = DEFAULT_DELTA) -> dict:
    """Sharpness summaries of a sampled 2D surface around its centre.

    Definitions (grid points only; distances in the coordinates of the directions):

    - centre c: the grid point nearest to (0, 0), which is (0, 0) itself on an odd symmetric grid (ties: the
      first in row-major order); distances are measured from it, and L(c) is its value.
    - max_radius: the largest radius of a disc around c that lies inside the grid, min(c_x - x[0],
      x[-1] - c_x, c_y - y[0], y[-1] - c_y).
    - rise within r: max over the finite grid points p with |p - c| <= r of L(p) - L(c), for each r in
      `radii`, radii beyond max_radius clipped to it (duplicates dropped). Each entry also counts the grid
      points in the disc and how many of them are missing (ignored in the max).
    - threshold: L(c) + delta.
    - basin_radius: the largest distance R of a grid point from c, R <= max_radius, such that every grid point
      within R of c is finite and below the threshold. basin_open is true when no point within max_radius
      fails, so R is only a lower bound (the basin reaches past the grid's disc).
    - fraction_below: the fraction of all grid points that are finite and below the threshold.
    - axis_intervals: along the row through c (y = c_y, key "x") and the column through c (x = c_x, key
      "y"): the run of consecutive grid points containing c that are below the threshold, as lo, hi, width =
      hi - lo (between the outermost grid points in the run, so a lower bound of the true width by less
      than two grid spacings), and whether each end is the grid's edge.

    Undefined numbers (the centre is missing, a disc without finite points) are None.

    Args:
        x: (nx,) coordinates; y: (ny,) coordinates; z: (ny, nx) values, z[j, i] at (x[i], y[j]).
        radii: radii for the rise; delta: the threshold's height above L(c), > 0.

    Returns:
        {"centre": {"i", "j", "x", "y", "value"}, "max_radius", "rise": [{"r", "rise", "points",
        "missing"}, ...], "delta", "threshold", "basin_radius", "basin_open", "fraction_below",
        "axis_intervals": {"x": {...} | None, "y": {...} | None}}.

    Example:
        >>> g = np.linspace(-1, 1, 21)
        >>> X, Y = np.meshgrid(g, g)
        >>> s = sharpness_2d(g, g, X**2 + Y**2, radii=[0.5], delta=0.3)
        >>> round(s["rise"][0]["rise"], 12), round(s["basin_radius"] ** 2, 12)
        (0.25, 0.29)
    """
    x, y, z = _as_grid(x, y, z)
    j, i = centre_index_2d(x, y)
    cx, cy, cz = float(x[i]), float(y[j]), float(z[j, i])
    X, Y = np.meshgrid(x, y)
    dist = np.hypot(X - cx, Y - cy).ravel()
    cover = min(cx - x.min(), x.max() - cx, cy - y.min(), y.max() - cy)
    out = {"centre": {"i": i, "j": j, "x": cx, "y": cy, "value": _num(cz)}}
    out.update(_disc_summary(dist, z.ravel(), cz, radii=radii, cover=cover, delta=delta))
    out["axis_intervals"] = {"x": _interval_below(x, z[j, :], i, out["threshold"]),
                             "y": _interval_below(y, z[:, i], j, out["threshold"])}
    return out


def sharpness_1d(x, loss, *, radii: Sequence[float] = DEFAULT_RADII, delta: float = DEFAULT_DELTA) -> dict:
    """The 1D analogue of `sharpness_2d` along one direction.

    - centre c: the grid point nearest to 0 (ties: the smaller x); max_radius: min(c - x[0], x[-1] - c).
    - rise within r: max over finite points with |x - c| <= r of loss - loss(c), radii clipped to
      max_radius.
    - basin_radius / basin_open / fraction_below: as in 2D with |x - c| as the distance.
    - interval: the run of consecutive points through c below loss(c) + delta (lo, hi, width, and
      whether each end is the grid's edge).

    Args:
        x: (n,) coordinates, increasing; loss: (n,) values.
        radii: radii for the rise; delta: the threshold's height above loss(c), > 0.

    Returns:
        {"centre": {"i", "x", "value"}, "max_radius", "rise": [...], "delta", "threshold",
        "basin_radius", "basin_open", "fraction_below", "interval": {...} | None}.

    Example:
        >>> x = np.linspace(-1, 1, 11)
        >>> s = sharpness_1d(x, 2 * x**2, radii=[0.4], delta=1.0)
        >>> round(s["rise"][0]["rise"], 12), round(s["interval"]["width"], 12)
        (0.32, 1.2)
    """
    x, loss = _as_line(x, loss)
    i = int(np.argmin(np.abs(x)))
    c, lc = float(x[i]), float(loss[i])
    out = {"centre": {"i": i, "x": c, "value": _num(lc)}}
    out.update(_disc_summary(np.abs(x - c), loss, lc, radii=radii, cover=min(c - x.min(), x.max() - c),
                             delta=delta))
    out["interval"] = _interval_below(x, loss, i, out["threshold"])
    return out


# ----------------------------------------------------------------------------------------------------------
# Text for the commands to print
# ----------------------------------------------------------------------------------------------------------

def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _interval_text(iv: Optional[dict]) -> str:
    if iv is None:
        return "n/a (centre missing or not below)"
    edges = [side for side, hit in (("low", iv["lo_at_edge"]), ("high", iv["hi_at_edge"])) if hit]
    note = f" (reaches the grid's {' and '.join(edges)} end)" if edges else ""
    return f"[{iv['lo']:.4g}, {iv['hi']:.4g}], width {iv['width']:.4g}{note}"


def sharpness_lines(summary: dict) -> list[str]:
    """Human-readable lines for a summary from `sharpness_2d` or `sharpness_1d`."""
    c = summary["centre"]
    where = f"({c['x']:.4g}, {c['y']:.4g})" if "y" in c else f"{c['x']:.4g}"
    lines = [f"centre {where}: {_fmt(c['value'])}"]
    lines.append("rise within r: " + ", ".join(f"r={e['r']:.4g}: {_fmt(e['rise'])}" for e in summary["rise"]))
    if summary["threshold"] is None:
        return lines + ["basin: n/a (the centre has no value)"]
    lines.append(f"basin below {summary['threshold']:.4g} (centre + {summary['delta']:g}): radius "
                 f"{summary['basin_radius']:.4g}{' or more (open within the grid)' if summary['basin_open'] else ''}"
                 f", {100 * summary['fraction_below']:.1f} % of the grid below")
    if "axis_intervals" in summary:
        for axis, iv in summary["axis_intervals"].items():
            lines.append(f"along {axis}: {_interval_text(iv)}")
    else:
        lines.append(f"interval: {_interval_text(summary['interval'])}")
    return lines


def critical_lines(points: Sequence[dict]) -> list[str]:
    """A small table of critical points, one line each, with a header and a count line."""
    counts = count_kinds(points)
    lines = [f"critical points: {counts['minimum']} minima, {counts['maximum']} maxima, {counts['saddle']} saddles"]
    if points:
        lines.append(f"{'kind':<8} {'i':>4} {'j':>4} {'x':>9} {'y':>9} {'value':>11}")
        lines += [f"{p['kind']:<8} {p['i']:>4} {p['j']:>4} {p['x']:>9.4g} {p['y']:>9.4g} {p['value']:>11.5g}"
                  for p in points]
    return lines
