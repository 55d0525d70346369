"""Making directions as a spec says (random, target, Hessian, Adam) and reusing a direction file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional

import torch

from loss_landscape.params import ParamVector
from loss_landscape.directions.files import check_fits, load_directions, save_directions
from loss_landscape.directions.identity import axes_are, spec_details, describe_spec, direction_identity, identity_differences
from loss_landscape.directions.spec import ADAMEQ, DirectionSpec, Directions
from loss_landscape.directions.vectors import create_random_direction, create_target_direction, direction_generator, normalize_direction_
from loss_landscape.errors import DirectionError


# ----------------------------------------------------------------------------------------------------------
# Set-up: reuse a direction file or make one
# ----------------------------------------------------------------------------------------------------------

def default_dir_file(spec: DirectionSpec) -> str:
    """A short, readable name next to the model file, e.g.
    ``model_300.t7.dirs-weights-filter-biasbn-seed123-2d.h5``; unit Hessian eigenvectors are ``...-unit-...``,
    normalized ones carry their norm and ignore, and non-default solver settings are added."""
    if spec.kind == "target":
        parts = [spec.dir_type, "to-" + os.path.basename(spec.model_file2)]
        if spec.model_file3:
            parts.append("to-" + os.path.basename(spec.model_file3))
    elif spec.kind == "hessian":
        d = spec_details(spec)
        parts = [spec.dir_type, "hessian", d.get("eig_on", "train"),
                 "dim2plus" if d.get("params") == "dim>1" else "all"]
        parts += [spec.xnorm or "nonorm", spec.xignore or "all"] if spec.xnorm or spec.xignore else ["unit"]
        if float(d.get("tol", 1e-4)) != 1e-4:
            parts.append(f"tol{float(d['tol']):g}")
        if int(d.get("seed", 0)):
            parts.append(f"hseed{int(d['seed'])}")
        if d.get("loss_name", "crossentropy") != "crossentropy":
            parts.append(d["loss_name"])
    elif spec.kind in ("adam", ADAMEQ):
        d = spec_details(spec)
        parts = [spec.dir_type, "adameq" if spec.kind == ADAMEQ else "adam",
                 os.path.basename(d.get("opt_file", "")), spec.xnorm or "nonorm", spec.xignore or "all"]
        if d.get("eps") is not None:
            parts.append(f"eps{d['eps']:g}")
    else:
        parts = [spec.dir_type, spec.xnorm or "nonorm", spec.xignore or "all"]
        y = (spec.ynorm if spec.ynorm is not None else spec.xnorm, spec.yignore if spec.yignore is not None
             else spec.xignore)
        if spec.two_d and not spec.same_dir and y != (spec.xnorm, spec.xignore):
            parts += ["y", y[0] or "nonorm", y[1] or "all"]
        parts.append(f"seed{spec.seed}")
        if spec.idx:
            parts.append(f"idx{spec.idx}")
    if spec.two_d:
        parts.append("samedir" if spec.same_dir else "2d")
    else:
        parts.append("1d")
    return f"{spec.model_file}.dirs-{'-'.join(parts)}.h5"


def make_directions(model: torch.nn.Module, spec: DirectionSpec, *, model2: Optional[torch.nn.Module] = None,
                    model3: Optional[torch.nn.Module] = None, hessian_data=None) -> Directions:
    """New directions for `model` as `spec` says: random ones from (seed, idx), model2 - model
    (and model3 - model), the top Hessian eigenvectors (on `hessian_data`, a `evaluation.DeviceSplit`) or
    an Adam state's moments; y equals x with ``same_dir``."""
    if spec.kind == "hessian":
        return hessian_directions(model, spec, hessian_data)
    if spec.kind in ("adam", ADAMEQ):
        return _adam_directions(model, spec)
    weights = ParamVector.from_model(model, spec.dir_type).to("cpu")
    g = direction_generator(spec.seed, spec.idx)
    if spec.kind == "target":
        if model2 is None:
            raise DirectionError("target directions need a second model (--model_file2)")
        x = create_target_direction(weights, ParamVector.from_model(model2, spec.dir_type))
    else:
        x = create_random_direction(weights, norm=spec.xnorm, ignore=spec.xignore, generator=g)
    y = None
    if spec.two_d:
        if spec.same_dir:
            y = x.clone()
        elif model3 is not None:
            y = create_target_direction(weights, ParamVector.from_model(model3, spec.dir_type))
        else:
            ynorm = spec.xnorm if spec.ynorm is None else spec.ynorm
            yignore = spec.xignore if spec.yignore is None else spec.yignore
            # Continues the same generator after x, as the original drew y after x.
            y = create_random_direction(weights, norm=ynorm, ignore=yignore, generator=g)
    return Directions(x, y, spec)


def hessian_directions(model: torch.nn.Module, spec: DirectionSpec, data) -> Directions:
    """x (and y) = the eigenvectors of the largest Hessian eigenvalues of the mean loss of `model` on `data`.

    `data` is a split on its device (`evaluation.DeviceSplit`), or a `data.Split` or factory Dataset split, held
    on the model's device for the products. ``spec.details`` gives ``params`` (all or dim>1), ``tol``, ``seed`` and
    ``loss_name`` (any loss of `loss_landscape.losses`); parameters outside
    the filter get 0. With ``xnorm`` and ``xignore`` both empty the axes are the unit eigenvectors; otherwise
    they are copies normalized as those say (filter normalization gives them the scale of random directions,
    and they are no longer eigenvectors). The eigenvalues (always those of the unit eigenvectors), the solver
    residuals and a sentence saying what the axes are (``axes``, ``eigenvalues_of``) are added to the returned
    spec's details. The sign of an eigenvector is arbitrary; the solver fixes it so that its largest entry is
    positive.
    """
    from loss_landscape.curvature.hessian import HessianOperator, hessian_data
    from loss_landscape.curvature.solvers import top_eigenpairs

    if spec.dir_type != "weights":
        raise DirectionError("Hessian directions are parameter vectors: use --dir_type weights")
    if data is None:
        raise DirectionError("Hessian directions need evaluation data")
    d = json.loads(spec.details or "{}")
    data = hessian_data(data, next(model.parameters()).device)  # a Split or a factory's Dataset: held there once
    op = HessianOperator(model, data, loss_name=d.get("loss_name", "crossentropy"), params=d.get("params", "all"),
                         batch_size=d.get("batch_size"), precision=d.get("precision", "fp32"))
    k = 2 if spec.two_d and not spec.same_dir else 1
    res = top_eigenpairs(op, k=k, tol=float(d.get("tol", 1e-4)), seed=int(d.get("seed", 0)))
    weights = ParamVector.from_model(model, "weights").to("cpu", torch.float32)
    index = {n: i for i, n in enumerate(weights.names)}
    vecs = []
    for row in res.vectors:
        tensors = [torch.zeros_like(t) for t in weights]
        for name, part in zip(op.param_names, op.unflatten(torch.from_numpy(row))):
            tensors[index[name]] = part.detach().to("cpu", torch.float32).reshape(weights[index[name]].shape)
        v = ParamVector(weights.names, tensors)
        if spec.xnorm or spec.xignore:
            normalize_direction_(v, weights, norm=spec.xnorm, ignore=spec.xignore)
        vecs.append(v)
    d.update(eigenvalues=[float(x) for x in res.values], residuals=[float(x) for x in res.residuals],
             matvecs=int(res.matvecs), eigenvalues_of="the unit eigenvectors",
             axes=axes_are(spec.xnorm, spec.xignore, "the unit eigenvectors", "eigenvectors"))
    out = dataclasses.replace(spec, details=json.dumps(d, sort_keys=True))
    y = (vecs[0].clone() if spec.same_dir else vecs[1]) if spec.two_d else None
    return Directions(vecs[0], y, out)


def _adam_directions(model: torch.nn.Module, spec: DirectionSpec) -> Directions:
    from loss_landscape.errors import AdamDirectionError
    from loss_landscape.directions.adam import adam_directions, adam_record, read_adam_state

    if spec.dir_type != "weights":
        raise DirectionError("Adam directions are parameter vectors: use --dir_type weights")
    d = json.loads(spec.details or "{}")
    mode = "adameq" if spec.kind == ADAMEQ else "add"
    try:
        state = read_adam_state(d["opt_file"], model)
        dirs = adam_directions(model, d["opt_file"], mode=mode, norm=spec.xnorm, ignore=spec.xignore,
                               eps=d.get("eps"), state=state)
    except AdamDirectionError as e:
        raise DirectionError(str(e)) from None
    d.update(adam_record(state, mode=mode, eps=d.get("eps"), opt_sha256=d.get("opt_sha256", "")))
    raw = "m / (sqrt(v) + eps)" if mode == "adameq" else "the moments m and v"
    d["axes"] = axes_are(spec.xnorm, spec.xignore, raw, "the raw " + ("update direction" if mode == "adameq"
                                                                         else "moments"))
    out = dataclasses.replace(spec, details=json.dumps(d, sort_keys=True))
    return Directions(dirs.x, dirs.y if spec.two_d else None, out)


def setup_directions(path: str, model: torch.nn.Module, spec: DirectionSpec, *,
                     model2: Optional[torch.nn.Module] = None, model3: Optional[torch.nn.Module] = None,
                     hessian_data=None, asked: Optional[Mapping[str, Any]] = None, strict_model: bool = True,
                     log=print) -> Directions:
    """Reuses the direction file at `path` when it exists (checking it as `open_directions` does), else makes
    and saves one as `spec` says.

    Args:
        path: the direction file.
        model: the centre model.
        spec: how to make new directions, and (with `asked` None) what an existing file must hold.
        model2, model3: target models for ``kind="target"``.
        asked: what an existing file must match, keyed as `direction_identity` keys it; None: all of `spec`'s
            identity; ``{}``: nothing (the file is used as it is).
        strict_model: refuse an existing file of ours that was made for a different checkpoint
            (a default-named file next to a retrained model); else only warn.
        log: where notes go.

    Example:
        >>> d = setup_directions("d.h5", net, DirectionSpec(two_d=True, seed=5))  # doctest: +SKIP
        >>> setup_directions("d.h5", net, DirectionSpec(two_d=True, seed=6))  # doctest: +SKIP
        DirectionError: direction file d.h5 holds other directions than asked (--seed: found 5, asked 6): ...
    """
    if os.path.exists(path):
        d = open_directions(path, model, spec, asked=asked, strict_model=strict_model, log=log)
        log(f"using directions from {path}")
        return d
    d = make_directions(model, spec, model2=model2, model3=model3, hessian_data=hessian_data)
    save_directions(path, d)
    log(f"wrote directions to {path}")
    return d


def open_directions(path: str, model: torch.nn.Module, spec: DirectionSpec, *,
                    asked: Optional[Mapping[str, Any]] = None, strict_model: bool = True, log=print) -> Directions:
    """Reads an existing direction file for `model` and the request `spec`, with every check of
    `setup_directions`.

    The file must hold the directions asked for: with `asked` None, every setting that decides the values of
    `spec`'s directions (`direction_identity`: kind, dir_type, seed, idx, norms, ignores, same_dir, target
    checksums, Hessian and Adam settings); otherwise the settings in `asked` (what the user gave explicitly),
    ``{}`` meaning the file is used as it is and its settings are printed. A mismatch is one `DirectionError`
    naming each difference. A file of the original tool records nothing: it is used as it is, with the
    requested dir_type. Then: it fits the model, has a y direction for a 2D surface, and (with
    `strict_model`) was made for this checkpoint. A 1D request uses x only.
    """
    d = load_directions(path)
    found = d.spec
    want = direction_identity(spec) if asked is None else dict(asked)
    if found.kind == "file":
        if asked:
            log(f"note: {path} records no settings (a file of the original tool), so {', '.join(want)} cannot "
                f"be checked; it is used as it is")
        elif asked is not None:
            log(f"using {path} as it is (no direction flag given): {describe_spec(found)}")
    else:
        diffs, unused = identity_differences(found, want)
        if diffs:
            todo = ("drop those flags to use the file as it is, or give another --dir_file for new directions"
                    if asked else "delete it to make new ones, or give another --dir_file")
            raise DirectionError(f"direction file {path} holds other directions than asked "
                                 f"({'; '.join(diffs)}): {todo}")
        if asked is not None and not asked:
            log(f"using {path} as it is (no direction flag given): {describe_spec(found)}")
        elif asked and unused:
            log(f"note: {path} holds {found.kind} directions, which {', '.join(unused)} do not decide")
    dir_type = spec.dir_type if found.kind == "file" else found.dir_type
    check_fits(d, ParamVector.from_model(model, dir_type), where=f"direction file {path}")
    if spec.two_d and d.y is None:
        raise DirectionError(f"direction file {path} holds only an x direction but a 2D surface (--y) was "
                             f"asked for; give another --dir_file or drop --y")
    if not spec.two_d and d.y is not None:
        log(f"note: {path} holds x and y directions; a 1D surface uses x only")
        d = Directions(d.x, None, d.spec)
    if found.model_sha256 and spec.model_sha256 and found.model_sha256 != spec.model_sha256:
        msg = (f"direction file {path} was made for a different checkpoint (sha256 "
               f"{found.model_sha256[:12]} versus {spec.model_sha256[:12]} now)")
        if strict_model:
            raise DirectionError(msg + "; delete it or name it with --dir_file to use it anyway")
        log("warning: " + msg)
    if found.kind == "file":
        d = Directions(d.x, d.y, dataclasses.replace(found, dir_type=spec.dir_type, two_d=spec.two_d))
    return d
