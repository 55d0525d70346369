"""The figure of a Hessian spectral density (numpy and matplotlib only; the density is computed elsewhere)."""

from __future__ import annotations

import numpy as np

from loss_landscape.plotting.figures import plt, save_figure  # the headless backend is chosen there


def density_figure(path: str, grid: np.ndarray, curve: np.ndarray, *, sigma: float, lambda_max: float,
                   lambda_min: float, trace: float, trace_stderr: float, lla: dict, title: str) -> str:
    """Writes the density `curve` over `grid` on a log scale, with the extreme eigenvalues, the trace and the
    LLA criteria (``re``, ``khn``, ``n``) written on it, to `path`; returns the path."""
    fig, ax = plt.subplots(figsize=(6, 4))
    floor = max(curve.max() * 1e-7, 1e-300)
    ax.semilogy(grid, np.maximum(curve, floor), color="C0", lw=1.2)
    ax.set_ylim(floor, curve.max() * 3)
    ax.axvline(lambda_max, color="C3", ls="--", lw=1, label=f"$\\lambda_{{max}}$ = {lambda_max:.4g}")
    ax.axvline(lambda_min, color="C2", ls="--", lw=1, label=f"$\\lambda_{{min}}$ = {lambda_min:.4g}")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    ax.text(0.02, 0.97, f"trace = {trace:.4g} $\\pm$ {trace_stderr:.2g}\nre = {lla['re']:.3g}, "
            f"Khn(n={lla['n']:g}) = {lla['khn']:.3g}\n$\\sigma$ = {sigma:.2g}",
            transform=ax.transAxes, va="top", fontsize=8, bbox={"facecolor": "white", "alpha": 0.85, "lw": 0})
    return save_figure(fig, path, dpi=150)
