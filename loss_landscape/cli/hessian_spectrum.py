#!/usr/bin/env python
"""Command: the curvature of the loss at one model: top Hessian eigenpairs, lambda_min, the trace, the
spectral density by stochastic Lanczos quadrature and the non-convexity measures re and Khn.

    python plot_hessian_spectrum.py                                    # embedded default (digits_cnn)
    python plot_hessian_spectrum.py --model resnet56 --model_file model_300.t7 --cuda --params 'dim>1'
    python plot_hessian_spectrum.py --model loss_landscape.examples.charlm:model --model_file charlm.pt \
        --dataset loss_landscape.examples.charlm:dataset --loss_name token_crossentropy --data_split 20

Any model, data and loss the surface commands take: a factory's inputs may be token ids, tuples or dicts, and
the loss any of loss_landscape.losses (the mean is weighted by sample or by token) or pkg.module:fn.

Writes <out>.json (numbers and provenance), <out>.h5 (eigenvectors, quadrature nodes and weights, trace
estimates) and <out>_density.<format> (the density on a log scale). See doc/curvature.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from loss_landscape.cli import _common as argtypes
from loss_landscape.curvature.hessian import PARAM_FILTERS
from loss_landscape.errors import USER_ERRORS, CurvatureError
from loss_landscape.losses import LOSSES

FORMAT_VERSION = 1


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argtypes.ArgumentParser(description="Hessian spectrum of the mean loss at one model: top eigenpairs, "
                                            "lambda_min, trace and SLQ density.", add_help=add_help)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="digits_cnn",
                   help="registry name, embedded name or pkg.module:factory (default: digits_cnn)")
    g.add_argument("--model_file", default=None,
                   help="checkpoint; default: trained_nets/<model>/model_30.t7, trained first for an embedded "
                        "model; a pkg.module:factory model without one keeps its factory's weights")
    g.add_argument("--dataset", default=None, help="cifar10, digits or pkg.module:factory (default: the model's own)")
    g.add_argument("--datapath", default="cifar10/data", help="folder holding cifar-10-batches-py (default: cifar10/data)")
    g.add_argument("--raw_data", action="store_true", help="do not normalize the images (default: normalize)")
    g.add_argument("--data_split", type=argtypes.pos_int, default=1, help="split the evaluation set into K parts (default: 1)")
    g.add_argument("--split_idx", type=argtypes.nonneg_int, default=0, help="use part i of --data_split (default: 0)")
    g.add_argument("--eval_on", default="train", choices=("train", "test"), help="the set the loss is averaged over (default: train)")
    g.add_argument("--eval_samples", type=argtypes.nonneg_int, default=0,
                   help="a fixed, seeded subset of N samples of each set, taken before --data_split (default: 0, all)")
    g.add_argument("--eval_seed", type=argtypes.nonneg_int, default=0,
                   help="seed of the --eval_samples subset (default: 0)")

    g = p.add_argument_group("Hessian")
    g.add_argument("--loss_name", default="crossentropy", type=argtypes.loss_name, metavar="LOSS",
                   help=f"{', '.join(LOSSES)}, or pkg.module:fn returning per-sample losses (default: crossentropy)")
    g.add_argument("--params", "--hessian_params", dest="params", default="all", choices=PARAM_FILTERS,
                   help="all parameters, or dim>1: conv/linear weights only, as the original (default: all)")
    g.add_argument("--batch_size", type=argtypes.pos_int, default=None,
                   help="samples per pass; memory only, not the result (default: 128 on CPU, 1024 on GPU)")
    g.add_argument("--cuda", action="store_true", help="compute on the GPU (default: CPU)")
    g.add_argument("--top_k", type=argtypes.pos_int, default=2, help="largest eigenpairs to compute (default: 2)")
    g.add_argument("--tol", "--hessian_tol", dest="tol", type=float, default=1e-4,
                   help="relative tolerance of the eigensolvers (default: 1e-4)")
    g.add_argument("--maxiter", type=argtypes.pos_int, default=None,
                   help="most Hessian-vector products per eigensolver (default: the solver's own)")
    g.add_argument("--trace_samples", type=argtypes.pos_int, default=100, help="Hutchinson probes (default: 100)")
    g.add_argument("--slq_runs", type=argtypes.pos_int, default=10, help="SLQ probes (default: 10)")
    g.add_argument("--slq_steps", type=argtypes.pos_int, default=80, help="Lanczos steps per SLQ probe (default: 80)")
    g.add_argument("--khn_n", type=float, default=0.5, help="exponent n of Khn (default: 0.5)")
    g.add_argument("--seed", type=argtypes.nonneg_int, default=0, help="seed of starting vectors and probes (default: 0)")

    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="output prefix (default: <model_file>_hessian_<eval_on>)")
    g.add_argument("--no_plot", action="store_true", help="write no density figure (default: write one)")
    g.add_argument("--format", default="png", choices=("png", "pdf", "svg"), help="figure format (default: png)")
    return p


def _sanitize(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in text)


def default_out(model_file: str, eval_on: str, *, params: str, loss_name: str, data_split: int, split_idx: int,
                raw_data: bool, eval_samples: int = 0, eval_seed: int = 0) -> str:
    """``<model_file>_hessian_<eval_on>``, with a suffix for each setting that changes H (a ``pkg.module:fn``
    loss by its function's name)."""
    parts = [f"{model_file}_hessian_{eval_on}"]
    if params != "all":
        parts.append("weights")
    if loss_name != "crossentropy":
        parts.append(_sanitize(loss_name.rpartition(":")[2]))
    if eval_samples:
        parts.append(f"n{eval_samples}" + (f"s{eval_seed}" if eval_seed else ""))
    if data_split > 1:
        parts.append(f"part{split_idx}of{data_split}")
    if raw_data:
        parts.append("raw")
    return "_".join(parts)


def plot_density(path: str, res, *, lambda_max: float, lambda_min: float, trace, lla: dict, title: str) -> str:
    """The SLQ density, Gaussian-broadened on a fine grid, drawn by `plotting.spectrum.density_figure`."""
    import numpy as np
    from loss_landscape.curvature.spectrum import density_curve
    from loss_landscape.plotting.spectrum import density_figure
    lo = min(lambda_min, float(res.nodes.min()))
    hi = max(lambda_max, float(res.nodes.max()))
    span = max(hi - lo, abs(hi), 1e-12)
    grid = np.linspace(lo - 0.05 * span, hi + 0.05 * span, 4000)
    sigma = span / 400
    return density_figure(path, grid, density_curve(res, grid, sigma=sigma), sigma=sigma, lambda_max=lambda_max,
                          lambda_min=lambda_min, trace=trace.trace, trace_stderr=trace.stderr, lla=lla, title=title)


def main(args: argparse.Namespace) -> int:
    # Imported here so that --help and argument errors answer at once.
    import h5py
    import numpy as np
    import torch

    from loss_landscape import curvature
    from loss_landscape.surface.job import load_model_and_data
    from loss_landscape.version import code_version

    timings = {}
    try:
        if not args.tol > 0:
            raise CurvatureError(f"--tol must be > 0, got {args.tol}")
        if not args.khn_n > 0:
            raise CurvatureError(f"--khn_n must be > 0, got {args.khn_n}")
        loaded = load_model_and_data(model=args.model, model_file=args.model_file, dataset=args.dataset,
                                     datapath=args.datapath, raw_data=args.raw_data, data_split=args.data_split,
                                     split_idx=args.split_idx, eval_samples=args.eval_samples,
                                     eval_seed=args.eval_seed, cuda=args.cuda)
        device, dataset, data, model = loaded.device, loaded.dataset, loaded.data, loaded.model
        model_file, sha = loaded.model_file, loaded.model_sha256
        # Held on the device (a factory's Dataset is read once): every product passes over the whole set.
        dev_data = curvature.hessian_data(data.train if args.eval_on == "train" else data.test, device)
        op = curvature.HessianOperator(model, dev_data, loss_name=args.loss_name, batch_size=args.batch_size,
                                       params=args.params, precision="fp32")
        weighed = "" if op.total_weight == len(dev_data) else \
            f" ({op.total_weight:,.6g} in the weighted mean: tokens or values)"
        print(f"model {args.model} from {model_file or 'its factory'}: H is {op.dim:,} x {op.dim:,} "
              f"({args.params}), {args.eval_on} set of {dataset}: {len(dev_data)} samples{weighed}, "
              f"{args.loss_name}, {device}")

        def timed(name, fn):
            start, before = time.perf_counter(), op.matvecs
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings[name] = {"seconds": time.perf_counter() - start, "matvecs": op.matvecs - before}
            return out

        loss, grad = timed("gradient", op.value_and_gradient)
        top = timed("top_eigenpairs", lambda: curvature.top_eigenpairs(
            op, k=args.top_k, tol=args.tol, maxiter=args.maxiter, seed=args.seed))
        lam_max, lam_min = timed("extreme_eigenvalues", lambda: curvature.extreme_eigenvalues(
            op, tol=args.tol, maxiter=args.maxiter, seed=args.seed))
        trace = timed("hutchinson_trace", lambda: curvature.hutchinson_trace(
            op, samples=args.trace_samples, seed=args.seed))
        slq = timed("slq_density", lambda: curvature.slq_density(
            op, runs=args.slq_runs, steps=args.slq_steps, seed=args.seed))
        lla = curvature.lla_criteria(slq, n=args.khn_n)
        out = args.out or default_out(model_file or _sanitize(args.model), args.eval_on, params=args.params,
                                      loss_name=args.loss_name, data_split=args.data_split, split_idx=args.split_idx,
                                      raw_data=args.raw_data, eval_samples=args.eval_samples,
                                      eval_seed=args.eval_seed)
        record = {
            "format_version": FORMAT_VERSION, "code_version": code_version(), "model": args.model,
            "model_file": os.path.abspath(model_file) if model_file else "", "model_sha256": sha, "dataset": dataset,
            "datapath": args.datapath if dataset == "cifar10" else "", "raw_data": args.raw_data,
            "data_split": args.data_split, "split_idx": args.split_idx, "eval_on": args.eval_on,
            "eval_samples": args.eval_samples, "eval_seed": args.eval_seed,
            "samples": len(dev_data), "total_weight": op.total_weight, "loss_name": args.loss_name,
            "params": args.params,
            "param_names": op.param_names, "dim": op.dim, "batch_size": op.batch_size, "device": str(device),
            "dtype": "float32", "seed": args.seed, "tol": args.tol, "maxiter": args.maxiter,
            "loss": loss, "grad_norm": float(grad.norm()),
            "top_eigenvalues": top.values.tolist(), "top_residuals": top.residuals.tolist(),
            "lambda_max": float(top.values[0]), "lambda_min": lam_min,
            "lanczos_extremes": [lam_max, lam_min],
            "trace": trace.trace, "trace_stderr": trace.stderr, "trace_samples": trace.samples,
            "slq_runs": slq.runs, "slq_steps": slq.steps, "re": lla["re"], "khn": lla["khn"], "khn_n": lla["n"],
            "re_runs": lla["re_runs"], "khn_runs": lla["khn_runs"], "timings": timings,
            "files": {"json": out + ".json", "h5": out + ".h5"},
        }
        if not args.no_plot:
            record["files"]["density"] = f"{out}_density.{args.format}"
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with h5py.File(out + ".h5", "w") as f:
            f["top_eigenvalues"] = top.values
            f["top_eigenvectors"] = top.vectors.astype(np.float32)
            f["top_residuals"] = top.residuals
            f["slq_nodes"] = slq.nodes
            f["slq_weights"] = slq.weights
            f["slq_lengths"] = slq.lengths
            f["trace_estimates"] = trace.estimates
            for key, value in record.items():
                if isinstance(value, (str, int, float, bool)) or value is None:
                    f.attrs[key] = "" if value is None else value
            f.attrs["param_names"] = op.param_names
            f.attrs["record_json"] = json.dumps(record)
        with open(out + ".json", "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        if not args.no_plot:
            plot_density(record["files"]["density"], slq, lambda_max=record["lambda_max"], lambda_min=lam_min,
                         trace=trace, lla=lla, title=f"{args.model}, {dataset} {args.eval_on} "
                                                     f"({len(dev_data)} samples), {args.loss_name}, params {args.params}")
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    rows = [("loss", f"{loss:.6g}"), ("|gradient|", f"{record['grad_norm']:.3g}"),
            ("lambda_max", f"{record['lambda_max']:.6g}"), ("lambda_min", f"{lam_min:.6g}"),
            (f"top {args.top_k}", ", ".join(f"{v:.6g}" for v in top.values)),
            ("trace", f"{trace.trace:.6g} +- {trace.stderr:.2g} ({trace.samples} probes)"),
            ("re = |lmin/lmax|", f"{lla['re']:.4g}"), (f"Khn (n={lla['n']:g})", f"{lla['khn']:.4g}")]
    rows += [(f"time {k}", f"{v['seconds']:.2f} s, {v['matvecs']} Hv") for k, v in timings.items()]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for path in record["files"].values():
        print(f"wrote {path}")
    return 0


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Parses `argv` (the command line when None) and runs the command; returns the exit code."""
    return argtypes.run_command(get_args_parser, main, argv, prog=prog)


if __name__ == "__main__":
    sys.exit(run())
