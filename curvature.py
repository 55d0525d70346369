"""Curvature of the loss at one model: Hessian-vector products, extreme eigenpairs, trace and spectral density.

What is computed, and why:

- **The Hessian of the mean loss** over the whole evaluation set, H = d^2/dw^2 (1/N) sum_i l(x_i, y_i; w).
  A product H v is the sum over batches b of (1/N) d/dw <d/dw sum_{i in b} l_i, v> (Pearlmutter's
  double backward), accumulated in float64. The original tool summed the *mean* loss of every batch
  before differentiating, so its eigenvalues were those of the mean-loss Hessian times the number of
  batches; here they do not depend on the batch size (up to float rounding).
- **Eval mode**: the model is put in eval mode, so BatchNorm uses its running statistics and dropout is
  off: the function differentiated is the one `evaluation.evaluate` measures and `plot_surface.py` draws.
- **Strict float32**: every product runs with TF32 off for cuDNN convolutions and matmuls (torch leaves it
  on for convolutions), the global flags being put back afterwards; ``precision="tf32"`` opts in.
- **A parameter filter**: ``params="all"`` differentiates with respect to every parameter;
  ``params="dim>1"`` only with respect to tensors with more than one dimension (convolution and linear
  weights), the set the original's Hessian script used. The others stay fixed.
- **Extreme eigenvalues** by Lanczos iteration on H (scipy's ARPACK ``eigsh`` for k pairs, a Lanczos run
  with full reorthogonalization that watches both ends at once for the pair (lambda_max, lambda_min)),
  the **trace** by Hutchinson's estimator with Rademacher probes, and the **spectral density** by
  stochastic Lanczos quadrature (SLQ, Ghorbani et al. 2019), from which the non-convexity measures
  ``re`` = |lambda_min / lambda_max| and ``Khn`` are read (see `lla_criteria`).

Every solver takes a seed: starting vectors and probes come from ``numpy.random.default_rng(seed)``, so a
result is reproducible. Solvers accept a `HessianOperator`, a scipy ``LinearOperator`` or a symmetric
numpy array (the latter two make exact tests possible).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla
import torch
from torch import nn

from evaluation import LOSSES, DeviceSplit, default_batch_size, per_sample_loss, precision_context

PARAM_FILTERS = ("all", "dim>1")
HESSIAN_PRECISIONS = ("fp32", "tf32")


class CurvatureError(ValueError):
    """A bad curvature setting or a solver that did not converge; the message is one line."""


class HessianOperator:
    """Products with the Hessian of the mean loss of `model` (eval mode) over `data`.

    Args:
        model: the network; it is put in eval mode and moved to the data's device. With a `dtype`
            other than its own, a converted copy is differentiated and `model` is left as it is.
        data: the evaluation set on its device.
        loss_name: one of `evaluation.LOSSES`.
        batch_size: samples per forward pass (memory only: the result does not depend on it);
            default `evaluation.default_batch_size`.
        params: ``"all"`` or ``"dim>1"`` (only weights with more than one dimension).
        dtype: the dtype of the forward and backward passes (float32, or float64 for reference values).
        precision: ``fp32`` (default: strict IEEE float32, TF32 off for cuDNN convolutions and matmuls while
            a product runs, whatever the global flags say) or ``tf32`` (allowed on the GPU: faster, about 3
            significant digits per operation). bf16 is refused: Lanczos needs products that are linear and
            symmetric to many more digits than bfloat16 keeps. See `evaluation.precision_context`.

    Attributes:
        params: the selected ``nn.Parameter`` objects, in ``model.parameters()`` order.
        param_names: their names.
        dim: total number of entries of the selected parameters (the size of H).
        device: where products are computed.
        matvecs: Hessian-vector products computed so far (a counter callers may read or reset).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
        >>> op = HessianOperator(net, DeviceSplit(torch.randn(20, 4), torch.randint(0, 3, (20,))))
        >>> op.matvec(torch.ones(op.dim)).shape == (op.dim,)
        True
    """

    def __init__(self, model: nn.Module, data: DeviceSplit, *, loss_name: str = "crossentropy",
                 batch_size: Optional[int] = None, params: str = "all", dtype: torch.dtype = torch.float32,
                 precision: str = "fp32"):
        if loss_name not in LOSSES:
            raise CurvatureError(f"unknown loss {loss_name!r}: expected one of {', '.join(LOSSES)}")
        if params not in PARAM_FILTERS:
            raise CurvatureError(f"unknown parameter filter {params!r}: expected one of {', '.join(PARAM_FILTERS)}")
        if dtype not in (torch.float32, torch.float64):
            raise CurvatureError(f"unsupported dtype {dtype}: expected torch.float32 or torch.float64")
        if precision not in HESSIAN_PRECISIONS:
            raise CurvatureError(f"unsupported precision {precision!r} for Hessian-vector products: expected "
                                 f"{' or '.join(HESSIAN_PRECISIONS)}")
        self.n = len(data)
        if self.n == 0:
            raise CurvatureError("the evaluation set is empty: expected at least one sample")
        self.device = data.inputs.device
        self.batch_size = default_batch_size(self.device) if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise CurvatureError(f"batch size must be >= 1, got {batch_size}")
        self.loss_name = loss_name
        self.params_filter = params
        self.dtype = dtype
        self.precision = precision
        own = next(model.parameters(), None)
        if own is None:
            raise CurvatureError("the model has no parameters: expected at least one")
        if own.dtype != dtype:
            model = copy.deepcopy(model).to(dtype)
        self.model = model.to(self.device).eval()
        named = [(n, p) for n, p in self.model.named_parameters() if params == "all" or p.dim() > 1]
        if not named:
            raise CurvatureError(f"parameter filter {params!r} selects no parameter: expected at least one")
        self.param_names = [n for n, _ in named]
        self.params = [p for _, p in named]
        for p in self.params:
            p.requires_grad_(True)
        self.dim = int(sum(p.numel() for p in self.params))
        inputs = data.inputs
        if inputs.is_floating_point() and inputs.dtype != dtype:
            inputs = inputs.to(dtype)
        self._inputs = inputs
        self._targets = data.targets
        self.matvecs = 0

    def _batches(self):
        for start in range(0, self.n, self.batch_size):
            yield self._inputs[start:start + self.batch_size], self._targets[start:start + self.batch_size]

    def unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        """Views of a flat vector of length `dim`, shaped like `params` (same dtype and device as `v`)."""
        if v.dim() != 1 or v.numel() != self.dim:
            raise CurvatureError(f"expected a flat vector of length {self.dim}, found shape {tuple(v.shape)}")
        out, start = [], 0
        for p in self.params:
            out.append(v[start:start + p.numel()].view_as(p))
            start += p.numel()
        return out

    def _flat64(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in parts])

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector `v` of length `dim`; returned in `v`'s dtype and on `v`'s device.

        Example:
            >>> hv = op.matvec(torch.randn(op.dim))  # doctest: +SKIP
        """
        vs = self.unflatten(v.detach().to(device=self.device, dtype=self.dtype))
        acc = [torch.zeros(p.shape, dtype=torch.float64, device=self.device) for p in self.params]
        with torch.enable_grad(), precision_context(self.precision, self.device):
            for x, y in self._batches():
                loss = per_sample_loss(self.model(x), y, self.loss_name, self.dtype).sum() / self.n
                grads = torch.autograd.grad(loss, self.params, create_graph=True)
                dot = sum((g * u).sum() for g, u in zip(grads, vs))
                for a, h in zip(acc, torch.autograd.grad(dot, self.params)):
                    a += h
        self.matvecs += 1
        return self._flat64(acc).to(device=v.device, dtype=v.dtype)

    def value_and_gradient(self) -> tuple[float, torch.Tensor]:
        """The mean loss and its flat gradient (float64, on `device`)."""
        acc = [torch.zeros(p.shape, dtype=torch.float64, device=self.device) for p in self.params]
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.enable_grad(), precision_context(self.precision, self.device):
            for x, y in self._batches():
                loss = per_sample_loss(self.model(x), y, self.loss_name, self.dtype).sum() / self.n
                for a, g in zip(acc, torch.autograd.grad(loss, self.params)):
                    a += g
                total += loss.detach()
        return float(total), self._flat64(acc)

    def gradient(self) -> torch.Tensor:
        """The flat gradient of the mean loss (float64, on `device`)."""
        return self.value_and_gradient()[1]

    def as_linear_operator(self) -> spla.LinearOperator:
        """A scipy ``LinearOperator`` of shape (dim, dim) taking and returning float64 numpy vectors."""
        def mv(x):
            v = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1)))
            return self.matvec(v).numpy()
        return spla.LinearOperator((self.dim, self.dim), matvec=mv, rmatvec=mv, dtype=np.float64)


Operator = Union[HessianOperator, spla.LinearOperator, np.ndarray]


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
