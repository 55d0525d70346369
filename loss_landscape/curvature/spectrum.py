"""The trace (Hutchinson) and the spectral density (stochastic Lanczos quadrature) of a Hessian, and the
non-convexity criteria read from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from loss_landscape.curvature.hessian import Operator
from loss_landscape.curvature.solvers import _Counted, _lanczos, _ritz
from loss_landscape.errors import CurvatureError


def _rademacher(rng: np.random.Generator, dim: int) -> np.ndarray:
    return rng.integers(0, 2, size=dim).astype(np.float64) * 2.0 - 1.0


@dataclass
class TraceResult:
    """Hutchinson's estimate of tr(H).

    Attributes:
        trace: mean of the estimates.
        stderr: standard error of that mean, std(estimates, ddof=1) / sqrt(samples) (NaN for one sample).
        samples: number of probes.
        estimates: z^T H z for each Rademacher probe z.
    """

    trace: float
    stderr: float
    samples: int
    estimates: np.ndarray


def hutchinson_trace(op: Operator, *, samples: int = 100, seed: int = 0) -> TraceResult:
    """Hutchinson's trace estimator: the mean of z^T H z over Rademacher probes z (entries +-1).

    Each estimate is unbiased; its variance is 2 (||H||_F^2 - sum_i H_ii^2). Probe r is the r-th draw
    ``rng.integers(0, 2, dim) * 2 - 1`` of ``numpy.random.default_rng(seed)`` (the same probes as the
    runs of `slq_density` with that seed).

    Example:
        >>> round(hutchinson_trace(np.diag([3.0, 1.0, -2.0]), samples=4).trace, 6)
        2.0
    """
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise CurvatureError(f"samples must be a whole number >= 1, got {samples!r}")
    mv = _Counted(op)
    rng = np.random.default_rng(seed)
    est = np.empty(samples)
    for r in range(samples):
        z = _rademacher(rng, mv.dim)
        est[r] = z @ mv(z)
    stderr = float(est.std(ddof=1) / math.sqrt(samples)) if samples > 1 else float("nan")
    return TraceResult(float(est.mean()), stderr, int(samples), est)


@dataclass
class SLQResult:
    """Stochastic Lanczos quadrature: per run, Ritz values and their Gauss quadrature weights.

    Attributes:
        nodes: (runs, steps) Ritz values, ascending in each row.
        weights: (runs, steps) squared first components of T's eigenvectors; each row sums to 1.
        steps: Lanczos steps asked (capped at dim).
        runs: number of probes.
        lengths: (runs,) steps actually taken; a run that finds an invariant subspace stops early and its
            row is padded with node 0 and weight 0.
        dim: size of H.
    """

    nodes: np.ndarray
    weights: np.ndarray
    steps: int
    runs: int
    lengths: np.ndarray
    dim: int


def slq_density(op: Operator, *, runs: int = 10, steps: int = 80, seed: int = 0) -> SLQResult:
    """The spectral density of H by stochastic Lanczos quadrature.

    For a Rademacher probe z, the Lanczos tridiagonal T_m from q1 = z / ||z|| (full reorthogonalization)
    gives nodes theta_j and weights w_j = (e_1^T s_j)^2 with sum_j w_j f(theta_j) ~ q1^T f(H) q1, exact
    for polynomials of degree < 2m; averaging over probes estimates (1/dim) tr f(H), the density.
    In particular dim * sum_j w_j theta_j = z^T H z, the Hutchinson estimate of the same probe.

    Example:
        >>> res = slq_density(np.diag([3.0, 1.0, -2.0]), runs=2, steps=3)
        >>> res.weights.sum(axis=1)
        array([1., 1.])
    """
    for name, value in (("runs", runs), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise CurvatureError(f"{name} must be a whole number >= 1, got {value!r}")
    mv = _Counted(op)
    m = min(int(steps), mv.dim)
    rng = np.random.default_rng(seed)
    nodes, weights, lengths = np.zeros((runs, m)), np.zeros((runs, m)), np.zeros(runs, dtype=np.int64)
    for r in range(runs):
        alpha, beta = _lanczos(mv, _rademacher(rng, mv.dim), m)
        theta, s = _ritz(alpha, beta)
        j = len(theta)
        nodes[r, :j], weights[r, :j], lengths[r] = theta, s[0] ** 2, j
    return SLQResult(nodes, weights, m, int(runs), lengths, mv.dim)


def density_curve(res: SLQResult, grid: np.ndarray, *, sigma: float) -> np.ndarray:
    """The SLQ density broadened by Gaussians of width `sigma`, averaged over runs, on `grid`.

    phi(t) = (1/runs) sum_r sum_j w_rj N(t; theta_rj, sigma^2); it integrates to 1 over the real line.

    Example:
        >>> res = slq_density(np.diag([3.0, 1.0, -2.0]), runs=1, steps=3)
        >>> t = np.linspace(-5, 6, 2001)
        >>> round(float(np.trapezoid(density_curve(res, t, sigma=0.1), t)), 3)
        1.0
    """
    if not sigma > 0:
        raise CurvatureError(f"sigma must be > 0, got {sigma}")
    grid = np.asarray(grid, dtype=np.float64)
    out = np.zeros_like(grid)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))
    for theta, w in zip(res.nodes, res.weights):
        keep = w > 0
        d = (grid[:, None] - theta[keep][None, :]) / sigma
        out += (np.exp(-0.5 * d * d) * w[keep][None, :]).sum(axis=1) * norm
    return out / res.runs


def lla_criteria(res: SLQResult, *, n: float = 0.5) -> dict[str, Any]:
    """Non-convexity measures from the SLQ spectrum.

    - ``re`` = |lambda_min / lambda_max| with the extreme Ritz values of each run, averaged over runs;
    - ``khn`` = mean over runs of sum_{theta<0} |theta w|^n / sum_{theta>0} |theta w|^n (nodes theta,
      weights w of the run): 0 for a convex (positive semi-definite) H, larger the more weight sits on
      negative curvature.

    Returns:
        {"re", "khn", "n", "re_runs", "khn_runs"} (per-run values as lists).

    Example:
        >>> c = lla_criteria(slq_density(np.diag([4.0, 1.0, -2.0]), runs=1, steps=3))
        >>> round(c["re"], 6)
        0.5
    """
    if not n > 0:
        raise CurvatureError(f"n must be > 0, got {n}")
    re_runs, khn_runs = [], []
    for theta, w, j in zip(res.nodes, res.weights, res.lengths):
        theta, w = theta[:j], w[:j]
        top = theta.max()
        re_runs.append(abs(theta.min() / top) if top != 0 else float("inf"))
        mass = np.abs(theta * w) ** n
        pos = float(mass[theta > 0].sum())
        neg = float(mass[theta < 0].sum())
        khn_runs.append(neg / pos if pos > 0 else (float("inf") if neg > 0 else float("nan")))
    return {"re": float(np.mean(re_runs)), "khn": float(np.mean(khn_runs)), "n": float(n),
            "re_runs": [float(x) for x in re_runs], "khn_runs": [float(x) for x in khn_runs]}
