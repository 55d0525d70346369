"""Curvature of the loss at one model: Hessian-vector products, extreme eigenpairs, trace and spectral density.

What is computed, and why:

- **The Hessian of the mean loss** over the whole evaluation set, H = d^2/dw^2 (1/W) sum_i w_i l(x_i, y_i; w),
  for any loss of `loss_landscape.losses`: the weights w_i are 1 per sample (classification, regression, the
  model's own loss) or 1 per token not ignored (``token_crossentropy`` of a language model), and W is their
  sum. A product H v is the sum over batches b of (1/W) d/dw <d/dw sum_{i in b} w_i l_i, v> (Pearlmutter's
  double backward), accumulated in float64. The original tool summed the *mean* loss of every batch
  before differentiating, so its eigenvalues were those of the mean-loss Hessian times the number of
  batches; here they do not depend on the batch size (up to float rounding). Inputs may be a tensor of any
  dtype (token ids), a tuple or a dict (`loss_landscape.batches`).
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

from loss_landscape.curvature.hessian import (PARAM_FILTERS, HESSIAN_PRECISIONS, HessianOperator, Operator,
                                              hessian_data)
from loss_landscape.curvature.solvers import (EigenResult, top_eigenpairs, bottom_eigenpairs,
                                              extreme_eigenvalues)
from loss_landscape.curvature.spectrum import (TraceResult, hutchinson_trace, SLQResult, slq_density,
                                               density_curve, lla_criteria)

__all__ = ["PARAM_FILTERS", "HESSIAN_PRECISIONS", "HessianOperator", "Operator", "hessian_data", "EigenResult",
           "top_eigenpairs", "bottom_eigenpairs", "extreme_eigenvalues", "TraceResult", "hutchinson_trace",
           "SLQResult", "slq_density", "density_curve", "lla_criteria"]
