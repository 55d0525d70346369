"""surface_stats on analytic surfaces: critical points of the grid and sharpness numbers against values
computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from loss_landscape.surface.stats import (centre_index_2d, count_kinds, critical_lines, critical_points,
                                          sharpness_1d, sharpness_2d, sharpness_lines)


def grid(fn, x, y):
    X, Y = np.meshgrid(x, y)
    return fn(X, Y)


# -- critical points ------------------------------------------------------------------------------------------

def test_bowl_has_one_minimum_at_its_centre_on_a_non_square_grid():
    x, y = np.linspace(-1, 1, 9), np.linspace(-1, 0.5, 7)  # steps 0.25: (0.5, -0.25) is a grid point
    z = grid(lambda a, b: (a - 0.5) ** 2 + (b + 0.25) ** 2, x, y)
    (p,) = critical_points(x, y, z)
    assert p == {"kind": "minimum", "i": 6, "j": 3, "x": 0.5, "y": -0.25, "value": 0.0}
    assert z[p["j"], p["i"]] == z.min()


def test_negative_bowl_has_one_maximum():
    x = np.linspace(-1, 1, 11)
    (p,) = critical_points(x, x, grid(lambda a, b: 3 - a ** 2 - b ** 2, x, x))
    assert (p["kind"], p["x"], p["y"], p["value"]) == ("maximum", 0.0, 0.0, 3.0)


def test_hyperbolic_paraboloid_has_a_saddle_at_the_centre_only():
    x = np.linspace(-1, 1, 11)
    (p,) = critical_points(x, x, grid(lambda a, b: a ** 2 - b ** 2, x, x))
    assert (p["kind"], p["i"], p["j"]) == ("saddle", 5, 5)


def test_monkey_saddle_is_a_saddle():
    """x^3 - 3 x y^2: six sign changes at the centre. Its three zero lines also cross the rings of (0, +-h),
    which the discrete definition calls saddles too (whatever the spacing h: the cubic is homogeneous)."""
    x = np.linspace(-1, 1, 9)
    pts = critical_points(x, x, grid(lambda a, b: a ** 3 - 3 * a * b ** 2, x, x))
    assert [(p["kind"], p["x"], p["y"]) for p in pts] == [("saddle", 0.0, -0.25), ("saddle", 0.0, 0.0),
                                                          ("saddle", 0.0, 0.25)]


def test_sin_sin_counts_and_places():
    """sin x sin y on [-2pi, 2pi]^2, step pi/8: extrema at (pi/2 + k pi, pi/2 + m pi) inside the grid (4 x 4,
    a maximum where sin x sin y = 1), saddles at (k pi, m pi) strictly inside (3 x 3)."""
    x = np.linspace(-2 * np.pi, 2 * np.pi, 33)
    z = grid(lambda a, b: np.sin(a) * np.sin(b), x, x)
    pts = critical_points(x, x, z)
    assert count_kinds(pts) == {"minimum": 8, "maximum": 8, "saddle": 9}
    for p in pts:
        if p["kind"] == "saddle":
            assert p["x"] / np.pi == pytest.approx(round(p["x"] / np.pi)) and abs(p["x"]) < 2 * np.pi - 1e-9
            assert p["y"] / np.pi == pytest.approx(round(p["y"] / np.pi)) and abs(p["y"]) < 2 * np.pi - 1e-9
        else:
            assert p["value"] == pytest.approx(1.0 if p["kind"] == "maximum" else -1.0)


def test_edges_missing_neighbours_and_plateaus_are_not_classified():
    x = np.linspace(-1, 1, 9)
    assert critical_points(x, x, grid(lambda a, b: (a - 1) ** 2 + b ** 2, x, x)) == []  # minimum on the edge
    z = grid(lambda a, b: a ** 2 + b ** 2, x, x)
    z[4, 5] = np.nan  # a neighbour of the minimum at [4, 4]
    assert [p for p in critical_points(x, x, z) if p["kind"] == "minimum"] == []
    z[4, 5] = np.inf
    assert [p for p in critical_points(x, x, z) if p["kind"] == "minimum"] == []
    flat = grid(lambda a, b: np.maximum(a ** 2 + b ** 2, 0.2), x, x)  # a flat floor: ties, no minimum
    assert critical_points(x, x, flat) == []
    assert critical_points(x, x, np.full((9, 9), np.nan)) == []
    assert critical_points(x, x, np.zeros((9, 9))) == []
    assert critical_points(x[:2], x, np.zeros((9, 2))) == []  # no interior points


def test_critical_points_refuse_a_transposed_grid():
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 3)
    with pytest.raises(ValueError, match=r"shape \(len\(y\), len\(x\)\) = \(3, 5\), got \(5, 3\)"):
        critical_points(x, y, np.zeros((5, 3)))


# -- sharpness 2D ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a", [1.0, 2.5])
def test_bowl_rise_basin_and_axis_widths(a):
    x = np.linspace(-1, 1, 21)  # step 0.1, (0, 0) on the grid
    s = sharpness_2d(x, x, grid(lambda u, v: a * (u ** 2 + v ** 2), x, x), radii=(0.1, 0.25, 0.5, 1.0, 3.0),
                     delta=0.3 * a)
    assert s["centre"] == {"i": 10, "j": 10, "x": 0.0, "y": 0.0, "value": 0.0}
    assert s["max_radius"] == 1.0
    rise = {e["r"]: e["rise"] for e in s["rise"]}
    assert list(rise) == [0.1, 0.25, 0.5, 1.0]  # 3.0 clipped to the grid's disc, then a duplicate of 1.0
    # Grid points exactly at radius r exist for 0.1, 0.5 and 1.0; within 0.25 the farthest is (0.2, 0.1).
    assert rise[0.1] == pytest.approx(a * 0.01)
    assert rise[0.25] == pytest.approx(a * 0.05)
    assert rise[0.5] == pytest.approx(a * 0.25)
    assert rise[1.0] == pytest.approx(a * 1.0)
    assert [e["points"] for e in s["rise"]][0] == 5 and all(e["missing"] == 0 for e in s["rise"])
    # a R^2 < 0.3 a: the largest grid radius^2 below 0.3 is 0.29 = 0.5^2 + 0.2^2 (0.30, 0.31 are not sums
    # of two squares of tenths; 0.32 = 0.4^2 + 0.4^2 is the first one outside).
    assert s["threshold"] == pytest.approx(0.3 * a)
    assert s["basin_radius"] == pytest.approx(math.sqrt(0.29)) and s["basin_open"] is False
    inside = sum(1 for i in range(-10, 11) for j in range(-10, 11) if i * i + j * j < 30)
    assert s["fraction_below"] == pytest.approx(inside / 21 ** 2)
    for axis in ("x", "y"):
        iv = s["axis_intervals"][axis]
        assert (iv["lo"], iv["hi"]) == pytest.approx((-0.5, 0.5)) and iv["width"] == pytest.approx(1.0)
        assert iv["lo_at_edge"] is False and iv["hi_at_edge"] is False
    json.dumps(s, allow_nan=False)


def test_off_centre_non_square_basin_and_axes():
    """A bowl elongated along x on a non-square grid: the axis widths tell x from y."""
    x, y = np.linspace(-2, 2, 41), np.linspace(-0.5, 0.5, 11)
    s = sharpness_2d(x, y, grid(lambda u, v: 0.25 * u ** 2 + 4 * v ** 2, x, y), radii=(0.1,), delta=0.5)
    assert s["max_radius"] == 0.5
    assert s["axis_intervals"]["x"]["width"] == pytest.approx(2.8)  # 0.25 u^2 < 0.5: |u| <= 1.4
    assert s["axis_intervals"]["y"]["width"] == pytest.approx(0.6)  # 4 v^2 < 0.5: |v| <= 0.3
    # (0, 0.4) is the nearest point outside (0.64 >= 0.5); the farthest nearer one is (0.3, 0.2)
    assert s["basin_radius"] == pytest.approx(math.sqrt(0.13))
    assert s["rise"] == [{"r": 0.1, "rise": pytest.approx(0.04), "points": 5, "missing": 0}]


def test_open_basin_and_the_grid_edge():
    x = np.linspace(-0.5, 0.5, 11)
    s = sharpness_2d(x, x, grid(lambda u, v: u ** 2 + v ** 2, x, x), delta=10.0)
    assert s["basin_open"] is True and s["basin_radius"] == 0.5 and s["fraction_below"] == 1.0
    assert [e["r"] for e in s["rise"]] == [0.1, 0.25, 0.5]
    assert s["axis_intervals"]["x"]["lo_at_edge"] and s["axis_intervals"]["x"]["hi_at_edge"]


def test_centre_is_the_nearest_grid_point_with_ties_to_the_first():
    x = np.linspace(-1.5, 1.5, 4)  # -1.5, -0.5, 0.5, 1.5 exactly: four points at the same distance from 0
    assert centre_index_2d(x, x) == (1, 1)
    s = sharpness_2d(x, x, grid(lambda u, v: u ** 2 + v ** 2, x, x))
    assert (s["centre"]["x"], s["centre"]["y"]) == (-0.5, -0.5)
    assert s["max_radius"] == 1.0
    y = np.linspace(-1, 0.5, 4)  # -1, -0.5, 0, 0.5: on the grid
    assert centre_index_2d(x, y) == (2, 1)


def test_missing_points():
    x = np.linspace(-1, 1, 21)
    z = grid(lambda u, v: u ** 2 + v ** 2, x, x)
    z[10, 12] = np.nan  # (0.2, 0): inside r = 0.25, and the first point of the basin's ring at 0.2
    s = sharpness_2d(x, x, z, radii=(0.25,), delta=0.3)
    assert s["rise"][0]["missing"] == 1 and s["rise"][0]["rise"] == pytest.approx(0.05)
    assert s["basin_radius"] == pytest.approx(math.sqrt(0.02))  # points up to (0.1, 0.1); 0.2 is missing
    assert s["axis_intervals"]["x"]["hi"] == pytest.approx(0.1)
    z[10, 10] = np.nan
    s = sharpness_2d(x, x, z)
    assert s["centre"]["value"] is None and s["basin_radius"] is None and s["threshold"] is None
    assert all(e["rise"] is None for e in s["rise"]) and s["axis_intervals"] == {"x": None, "y": None}
    json.dumps(s, allow_nan=False)
    assert any("n/a" in line for line in sharpness_lines(s))
    s = sharpness_2d(x, x, np.full((21, 21), np.nan))
    assert s["basin_radius"] is None


def test_bad_arguments():
    x = np.linspace(-1, 1, 5)
    with pytest.raises(ValueError, match="delta must be > 0"):
        sharpness_2d(x, x, np.zeros((5, 5)), delta=0)
    with pytest.raises(ValueError, match="radii must be >= 0"):
        sharpness_2d(x, x, np.zeros((5, 5)), radii=(-1,))
    with pytest.raises(ValueError, match="same length"):
        sharpness_1d(x, np.zeros(4))


# -- sharpness 1D ---------------------------------------------------------------------------------------------

def test_sharpness_1d_on_a_parabola():
    x = np.linspace(-1, 1, 21)
    s = sharpness_1d(x, 2 * x ** 2 + 0.5, radii=(0.1, 0.25, 0.5), delta=0.5)
    assert s["centre"] == {"i": 10, "x": 0.0, "value": 0.5}
    assert [e["rise"] for e in s["rise"]] == pytest.approx([0.02, 2 * 0.04, 0.5])
    assert [e["points"] for e in s["rise"]] == [3, 5, 11]
    # 2 x^2 < 0.5: |x| < 0.5, so the grid points up to 0.4; 0.5 itself is at the threshold (not below)
    assert s["basin_radius"] == pytest.approx(0.4) and not s["basin_open"]
    assert (s["interval"]["lo"], s["interval"]["hi"], s["interval"]["width"]) == pytest.approx((-0.4, 0.4, 0.8))
    assert s["fraction_below"] == pytest.approx(9 / 21)
    assert any(line.startswith("interval: [-0.4, 0.4]") for line in sharpness_lines(s))


def test_sharpness_1d_interpolation_grid_is_clipped_to_the_short_side():
    x = np.linspace(-0.5, 1.5, 21)  # model A at 0, model B at 1
    s = sharpness_1d(x, (x - 0.0) ** 2 * (x - 1) ** 2, radii=(0.25, 1.0), delta=0.05)
    assert s["max_radius"] == pytest.approx(0.5)
    assert [e["r"] for e in s["rise"]] == pytest.approx([0.25, 0.5])
    # x^2 (x - 1)^2 < 0.05: 0.3 gives 0.0441 but 0.4 0.0576; -0.1 gives 0.0121 but -0.2 0.0576
    assert s["interval"]["lo"] == pytest.approx(-0.1) and s["interval"]["hi"] == pytest.approx(0.3)


def test_tables():
    x = np.linspace(-1, 1, 11)
    pts = critical_points(x, x, grid(lambda a, b: a ** 2 - b ** 2, x, x))
    lines = critical_lines(pts)
    assert lines[0] == "critical points: 0 minima, 0 maxima, 1 saddles"
    assert lines[2].split()[:3] == ["saddle", "5", "5"]
    assert critical_lines([]) == ["critical points: 0 minima, 0 maxima, 0 saddles"]
