"""Lanczos solvers for the extreme eigenpairs of a Hessian (or any symmetric operator), seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from loss_landscape.curvature.hessian import HessianOperator, Operator
from loss_landscape.errors import CurvatureError


class _Counted:
    """Float64 numpy products with any supported operator, counted, with an optional budget."""

    def __init__(self, op: Operator, budget: Optional[int] = None):
        if isinstance(op, HessianOperator):
            self.lin = op.as_linear_operator()
        elif isinstance(op, np.ndarray):
            if op.ndim != 2 or op.shape[0] != op.shape[1]:
                raise CurvatureError(f"expected a square matrix, found shape {op.shape}")
            self.lin = spla.aslinearoperator(op.astype(np.float64))
        elif isinstance(op, spla.LinearOperator):
            self.lin = op
        else:
            raise CurvatureError(f"expected a HessianOperator, LinearOperator or numpy array, found {type(op).__name__}")
        self.dim = int(self.lin.shape[0])
        self.count = 0
        self.budget = budget

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.budget is not None and self.count >= self.budget:
            raise _BudgetSpent()
        self.count += 1
        return np.asarray(self.lin.matvec(np.asarray(x, dtype=np.float64).reshape(-1)), dtype=np.float64).reshape(-1)

    def linear_operator(self) -> spla.LinearOperator:
        return spla.LinearOperator((self.dim, self.dim), matvec=self, rmatvec=self, dtype=np.float64)


class _BudgetSpent(Exception):
    pass


@dataclass
class EigenResult:
    """Eigenpairs of H from a Lanczos solver.

    Attributes:
        values: eigenvalues (float64): descending for `top_eigenpairs`, ascending for `bottom_eigenpairs`.
        vectors: (k, dim) float64 unit-norm eigenvectors, row i belonging to values[i].
        residuals: ||H v_i - lambda_i v_i||, computed afresh (k extra products, not in `matvecs`).
        matvecs: Hessian-vector products the solver used (one per Lanczos step).
        tol: the relative tolerance asked of the solver.
        which: ``"LA"`` (largest algebraic) or ``"SA"`` (smallest algebraic).
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    matvecs: int
    tol: float
    which: str

    @property
    def iterations(self) -> int:
        """Lanczos steps taken; each costs one product, so the same number as `matvecs`."""
        return self.matvecs


def _check_k(k: int, dim: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < dim:
        raise CurvatureError(f"k must be a whole number in [1, {dim - 1}] for a Hessian of size {dim}, got {k!r}")


def _eigenpairs(op: Operator, k: int, which: str, tol: float, maxiter: Optional[int], seed: int) -> EigenResult:
    mv = _Counted(op, budget=maxiter)
    _check_k(k, mv.dim)
    if not tol > 0:
        raise CurvatureError(f"tol must be > 0, got {tol}")
    v0 = np.random.default_rng(seed).standard_normal(mv.dim)
    try:
        values, vectors = spla.eigsh(mv.linear_operator(), k=k, which=which, tol=tol, v0=v0)
    except _BudgetSpent:
        raise CurvatureError(f"eigsh ({which}, k={k}) did not converge to tol {tol:g} within maxiter={maxiter} "
                             f"Hessian-vector products: raise maxiter or tol") from None
    except spla.ArpackNoConvergence as e:
        raise CurvatureError(f"eigsh ({which}, k={k}) did not converge to tol {tol:g}: found "
                             f"{len(e.eigenvalues)} of {k} eigenvalues; raise maxiter or tol") from None
    used = mv.count
    order = np.argsort(-values if which == "LA" else values)
    values, vectors = values[order], vectors[:, order].T.copy()
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # A fixed sign (largest entry positive), so that files written twice agree.
    signs = np.sign(vectors[np.arange(k), np.abs(vectors).argmax(axis=1)])
    vectors *= np.where(signs == 0, 1.0, signs)[:, None]
    mv.budget = None
    residuals = np.array([np.linalg.norm(mv(u) - lam * u) for lam, u in zip(values, vectors)])
    return EigenResult(values.astype(np.float64), vectors, residuals, used, float(tol), which)


def top_eigenpairs(op: Operator, k: int = 1, *, tol: float = 1e-4, maxiter: Optional[int] = None,
                   seed: int = 0) -> EigenResult:
    """The k largest (algebraic) eigenvalues of H and their eigenvectors, by ARPACK's Lanczos (``eigsh``).

    Args:
        op: a `HessianOperator`, a scipy ``LinearOperator`` or a symmetric numpy array.
        k: number of pairs, 1 <= k < dim.
        tol: ARPACK's relative tolerance: each Ritz pair has ||H v - lambda v|| <= tol * |lambda|.
        maxiter: the most Hessian-vector products to spend (default: ARPACK's own limit).
        seed: seeds the starting vector.

    Returns:
        `EigenResult` with values sorted descending.

    Example:
        >>> top_eigenpairs(np.diag([3.0, 1.0, -2.0]), k=1).values
        array([3.])
    """
    return _eigenpairs(op, k, "LA", tol, maxiter, seed)


def bottom_eigenpairs(op: Operator, k: int = 1, *, tol: float = 1e-4, maxiter: Optional[int] = None,
                      seed: int = 0) -> EigenResult:
    """The k smallest (most negative) eigenvalues of H and their eigenvectors, sorted ascending.

    As `top_eigenpairs`. ARPACK's tolerance is relative to |lambda|, so an eigenvalue close to zero
    takes many products; `extreme_eigenvalues` is cheaper when only the value is needed.

    Example:
        >>> bottom_eigenpairs(np.diag([3.0, 1.0, -2.0]), k=1).values
        array([-2.])
    """
    return _eigenpairs(op, k, "SA", tol, maxiter, seed)


def _lanczos(mv: _Counted, q0: np.ndarray, steps: int, stop=None):
    """Lanczos with full reorthogonalization from `q0` (normalized here), at most `steps` steps.

    `stop(alpha, beta)` may end the run early. Returns (alpha, beta) of the tridiagonal T (beta[j] is
    the coupling after step j; its last entry drives the residual bound).
    """
    n = mv.dim
    steps = min(steps, n)
    basis = np.empty((min(steps, 32), n))  # grown by doubling: a run that stops early holds little
    q = q0 / np.linalg.norm(q0)
    alpha, beta = [], []
    for j in range(steps):
        if j == len(basis):
            basis = np.concatenate([basis, np.empty((min(len(basis), steps - j), n))])
        basis[j] = q
        w = mv(q)
        a = float(q @ w)
        w -= basis[:j + 1].T @ (basis[:j + 1] @ w)  # full reorthogonalization, twice for safety
        w -= basis[:j + 1].T @ (basis[:j + 1] @ w)
        b = float(np.linalg.norm(w))
        alpha.append(a)
        beta.append(b)
        scale = max(max(abs(x) for x in alpha), max(beta[:-1], default=0.0), np.finfo(float).tiny)
        if b <= 1e-10 * scale:  # an invariant subspace: T's eigenvalues are exact eigenvalues of H
            break
        if stop is not None and stop(alpha, beta):
            break
        q = w / b
    return np.array(alpha), np.array(beta)


def _ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the Lanczos tridiagonal matrix."""
    if len(alpha) == 1:
        return alpha.copy(), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(alpha, beta[:-1])


def extreme_eigenvalues(op: Operator, *, tol: float = 1e-4, maxiter: Optional[int] = None,
                        seed: int = 0) -> tuple[float, float]:
    """(lambda_max, lambda_min) of H from one Lanczos run that watches both ends of the spectrum.

    The run stops when the Lanczos residual bound |beta_m s_m| of both extreme Ritz pairs is at most
    tol * max(|lambda_max|, |lambda_min|): each end is then within that distance of an eigenvalue, so
    |lambda_min / lambda_max| is accurate to about tol even when lambda_min is close to zero. One run
    costs about as many products as the slower of the two ends alone, and is deterministic for a seed.

    Args:
        op: a `HessianOperator`, a scipy ``LinearOperator`` or a symmetric numpy array.
        tol: tolerance relative to the spectral radius.
        maxiter: the most Lanczos steps (products), default min(dim, 500); the basis held is
            maxiter x dim float64.
        seed: seeds the starting vector.

    Raises:
        CurvatureError: not converged within maxiter steps.

    Example:
        >>> [round(x, 6) for x in extreme_eigenvalues(np.diag([3.0, 1.0, -2.0]))]
        [3.0, -2.0]
    """
    mv = _Counted(op)
    if not tol > 0:
        raise CurvatureError(f"tol must be > 0, got {tol}")
    steps = min(mv.dim, 500) if maxiter is None else int(maxiter)
    if steps < 1:
        raise CurvatureError(f"maxiter must be >= 1, got {maxiter}")
    done = {}

    def converged(alpha, beta):
        theta, s = _ritz(np.array(alpha), np.array(beta))
        bounds = abs(beta[-1]) * np.abs(s[-1, [0, -1]])
        done["ok"] = bool(np.all(bounds <= tol * max(abs(theta[0]), abs(theta[-1]))))
        return done["ok"]

    alpha, beta = _lanczos(mv, np.random.default_rng(seed).standard_normal(mv.dim), steps, stop=converged)
    theta, _ = _ritz(alpha, beta)
    exhausted = len(alpha) == mv.dim or beta[-1] <= 1e-10 * max(np.abs(alpha).max(), np.abs(beta).max(), 1e-300)
    if not done.get("ok") and not exhausted:
        raise CurvatureError(f"extreme eigenvalues did not converge to tol {tol:g} within {len(alpha)} Lanczos "
                             f"steps: raise maxiter or tol")
    return float(theta[-1]), float(theta[0])
