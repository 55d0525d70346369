#!/usr/bin/env python
"""Cost of curvature: one Hessian-vector product against one gradient over the same data, and the time
and products of the top eigenvalue and of (lambda_max, lambda_min), on the embedded digits_cnn.

Everything runs in one process on the same model and data (the digits training set, eval mode); each
figure is the median of --repeats runs after a warm-up.

    python benchmarks/bench_hessian.py                      # trains the embedded model once if needed
    python benchmarks/bench_hessian.py --model_file trained_nets/digits_cnn/model_30.t7 --cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loss_landscape import curvature  # noqa: E402
from loss_landscape.models import digits as embedded  # noqa: E402
from loss_landscape.models import loading as models  # noqa: E402
from loss_landscape.data import load_dataset  # noqa: E402
from loss_landscape.evaluation import DeviceSplit  # noqa: E402


def timed(fn, device, repeats):
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_file", default=None, help="digits_cnn checkpoint (default: the embedded model, "
                                                      "trained once into the temporary folder)")
    p.add_argument("--batch_sizes", default="128,all", help="batch sizes to time, comma-separated (default: 128,all)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per figure (default: 5)")
    p.add_argument("--tol", type=float, default=1e-4, help="eigensolver tolerance (default: 1e-4)")
    p.add_argument("--cuda", action="store_true", help="run on the GPU")
    args = p.parse_args()
    device = torch.device("cuda" if args.cuda else "cpu")

    digits = load_dataset("digits")
    path = args.model_file or os.path.join(tempfile.gettempdir(), "loss-landscape-bench", "digits_cnn_model_30.t7")
    embedded.ensure_checkpoint(path, "digits_cnn", digits.train.inputs, digits.train.targets, epochs=30)
    model = models.load_model("digits_cnn", path)
    data = DeviceSplit.put(digits.train.inputs, digits.train.targets, device)
    print(f"digits_cnn from {path}, digits train set ({len(data)} samples), device {device}, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}")

    for text in args.batch_sizes.split(","):
        bs = len(data) if text == "all" else int(text)
        op = curvature.HessianOperator(model, data, batch_size=bs)
        v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0)).to(device)
        t_grad, _ = timed(op.gradient, device, args.repeats)
        t_hvp, _ = timed(lambda: op.matvec(v), device, args.repeats)
        print(f"batch {bs:5d}: gradient {1e3 * t_grad:7.1f} ms, Hessian-vector product {1e3 * t_hvp:7.1f} ms, "
              f"ratio {t_hvp / t_grad:.2f}")

    op = curvature.HessianOperator(model, data, batch_size=len(data))
    for name, fn in (("top eigenvalue (eigsh LA, k=1)",
                      lambda: curvature.top_eigenpairs(op, k=1, tol=args.tol, seed=0).values[0]),
                     ("extreme_eigenvalues (one Lanczos run)",
                      lambda: curvature.extreme_eigenvalues(op, tol=args.tol, seed=0))):
        before = op.matvecs
        t, value = timed(fn, device, max(1, args.repeats // 2))
        per_run = (op.matvecs - before) // (max(1, args.repeats // 2) + 1)
        shown = f"{value:.6g}" if isinstance(value, float) else ", ".join(f"{x:.6g}" for x in value)
        print(f"{name}: {t:.2f} s, {per_run} Hessian-vector products (tol {args.tol:g}): {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
