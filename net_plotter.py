"""Directions in weight space: create, normalize, save/load, and move a model along them.

A direction is a `ParamVector` shaped like the model's parameters (``dir_type="weights"``) or like its
full state dict (``dir_type="states"``, BN running statistics included). The arithmetic follows the
original tool (Li et al. 2018, tomgoldstein/loss-landscape) operation for operation, in float32, so
that the same directions give the same surfaces to the last digit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import h5py
import numpy as np
import torch

from param_vector import ParamVector
from version import code_version

NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", "")
IGNORES = ("biasbn", "")
DIRECTION_FORMAT = "loss-landscape directions"
DIRECTION_FORMAT_VERSION = 1


class DirectionError(ValueError):
    """A direction file or direction setting that cannot be used; the message is one line."""


@dataclass(frozen=True)
class DirectionSpec:
    """How a pair of directions was made; recorded in the direction file.

    ``kind`` is ``random`` (Gaussian, normalized), ``target`` (model2 - model [, model3 - model]),
    ``hessian`` (the top Hessian eigenvectors of the centre model), ``adam`` (Adam's moments m and v) or
    ``adam-adameq`` (Adam's update direction m / (sqrt(v) + eps), stepped by LLA's k = x / sqrt(y)), ``pca``
    (a training path's principal components), or ``file`` (read from a file that recorded nothing, such as
    one the original tool wrote). ``details`` is a JSON object with what a kind needs beyond the common
    fields (the Hessian's settings and eigenvalues; the optimizer file, its checksum, mode and eps).
    ``model2_sha256``/``model3_sha256`` are the target models' checksums (empty in files written before they
    were recorded); `direction_identity` says which fields decide the values of each kind.
    """

    dir_type: str = "weights"
    kind: str = "random"
    xnorm: str = "filter"
    xignore: str = "biasbn"
    ynorm: Optional[str] = None
    yignore: Optional[str] = None
    seed: int = 123
    idx: int = 0
    two_d: bool = False
    same_dir: bool = False
    model_file: str = ""
    model_sha256: str = ""
    model_file2: str = ""
    model_file3: str = ""
    details: str = ""
    model2_sha256: str = ""
    model3_sha256: str = ""


ADAMEQ = "adam-adameq"


@dataclass
class Directions:
    """The x direction and, for 2D surfaces, the y direction."""

    x: ParamVector
    y: Optional[ParamVector]
    spec: DirectionSpec

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    def sha256(self) -> str:
        """A checksum of the direction values, independent of the file they came from."""
        h = hashlib.sha256()
        for vec in (self.x, self.y):
            for t in (vec or []):
                a = np.ascontiguousarray(t.detach().cpu().numpy())
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()

    def cosine(self) -> float:
        """Cosine similarity of x and y (NaN for 1D)."""
        return float("nan") if self.y is None else self.x.cosine(self.y)


# ----------------------------------------------------------------------------------------------------------
# Normalization
# ----------------------------------------------------------------------------------------------------------

def normalize_tensor_(d: torch.Tensor, w: torch.Tensor, norm: str) -> None:
    """Rescales one direction tensor `d` (dim > 1) against the weights `w`, in place.

    ``filter``: each slice d[i] along dim 0 (an output filter or neuron) gets the norm of w[i];
    ``layer``: the tensor gets the norm of w; ``weight``: d * w elementwise; ``dfilter``: each
    filter of d gets unit norm; ``dlayer``: d gets unit norm; ``""``: unchanged. The 1e-10 guards
    and the float32 scalar arithmetic are the original tool's.
    """
    if norm == "filter":
        for di, wi in zip(d, w):
            di.mul_(wi.norm() / (di.norm() + 1e-10))
    elif norm == "layer":
        d.mul_(w.norm() / d.norm())
    elif norm == "weight":
        d.mul_(w)
    elif norm == "dfilter":
        for di in d:
            di.div_(di.norm() + 1e-10)
    elif norm == "dlayer":
        d.div_(d.norm())
    elif norm != "":
        raise DirectionError(f"unknown norm {norm!r}: expected one of {', '.join(n or repr(n) for n in NORMS)}")


def normalize_direction_(direction: ParamVector, weights: ParamVector, *, norm: str, ignore: str) -> None:
    """Normalizes a whole direction in place against `weights`.

    Tensors with dim <= 1 (biases, BN weights and running statistics) are zeroed when
    ``ignore == "biasbn"``; otherwise they become a copy of the weights, as in the original tool,
    so that a step a scales them by (1 + a). Tensors with dim > 1 go through `normalize_tensor_`.

    Example:
        >>> w = ParamVector.from_model(torch.nn.Linear(4, 3), "weights")
        >>> d = ParamVector(w.names, [torch.randn(t.shape) for t in w])
        >>> normalize_direction_(d, w, norm="filter", ignore="biasbn")
        >>> float(d[1].abs().sum())
        0.0
    """
    if ignore not in IGNORES:
        raise DirectionError(f"unknown ignore {ignore!r}: expected 'biasbn' or ''")
    for d, w in zip(direction, weights):
        if d.dim() <= 1:
            if ignore == "biasbn":
                d.fill_(0)
            else:
                d.copy_(w)
        else:
            normalize_tensor_(d, w, norm)


def direction_generator(seed: int, idx: int) -> torch.Generator:
    """The CPU generator for random directions number `idx` of a run seeded with `seed`.

    Different `idx` values give independent streams (unlike the original, where --idx only
    changed a file name); idx 0 is plain ``torch.manual_seed(seed)``.
    """
    g = torch.Generator(device="cpu")
    if idx == 0:
        g.manual_seed(seed)
    else:
        g.manual_seed(int(np.random.SeedSequence([seed, idx]).generate_state(1, dtype=np.uint64)[0]))
    return g


def create_random_direction(weights: ParamVector, *, norm: str = "filter", ignore: str = "biasbn",
                            generator: torch.Generator) -> ParamVector:
    """A Gaussian direction shaped like `weights`, normalized against them.

    Drawn on the CPU in float32 so the same seed gives the same direction on any device.

    Example:
        >>> w = ParamVector.from_model(torch.nn.Linear(4, 3), "weights")
        >>> d = create_random_direction(w, generator=direction_generator(123, 0))
        >>> d.shapes == w.shapes
        True
    """
    cpu_w = weights.to("cpu")
    d = ParamVector(cpu_w.names, [torch.randn(w.shape, generator=generator) for w in cpu_w])
    normalize_direction_(d, cpu_w, norm=norm, ignore=ignore)
    return d


def create_target_direction(base: ParamVector, target: ParamVector) -> ParamVector:
    """target - base, not normalized (so a step of 1 lands exactly on the target model)."""
    if base.names != target.names:
        for a, b in zip(base.names, target.names):
            if a != b:
                raise DirectionError(f"the two models differ: parameter {a!r} versus {b!r}")
        raise DirectionError(f"the two models differ: {len(base)} versus {len(target)} tensors")
    return target.to("cpu").sub(base.to("cpu"))


# ----------------------------------------------------------------------------------------------------------
# Direction files
# ----------------------------------------------------------------------------------------------------------

def save_directions(path: str, directions: Directions) -> None:
    """Writes a direction file in the original's layout plus what it never recorded.

    Layout: groups ``xdirection`` (and ``ydirection``) with datasets ``"0"`` ... ``"N-1"`` in
    parameter order, readable by the original tool; attributes on the root hold the spec, the
    tensor names and shapes, and a checksum of the values. Written to a temporary name first and
    renamed, so a crash never leaves half a file.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    with h5py.File(tmp, "w") as f:
        for group, vec in (("xdirection", directions.x), ("ydirection", directions.y)):
            if vec is None:
                continue
            g = f.create_group(group)
            for i, t in enumerate(vec):
                g.create_dataset(str(i), data=t.detach().cpu().numpy())
        f.attrs["format"] = DIRECTION_FORMAT
        f.attrs["format_version"] = DIRECTION_FORMAT_VERSION
        f.attrs["code_version"] = code_version()
        f.attrs["names"] = json.dumps(directions.x.names)
        f.attrs["shapes"] = json.dumps(directions.x.shapes)
        f.attrs["spec"] = json.dumps(dataclasses.asdict(directions.spec))
        f.attrs["directions_sha256"] = directions.sha256()
    os.replace(tmp, path)


def load_directions(path: str) -> Directions:
    """Reads a direction file written by this tool or by the original one.

    Files of the original carry no names or spec: names are filled in later by `check_fits`
    from the model, and the spec says ``kind="file"``.
    """
    try:
        with h5py.File(path, "r") as f:
            if "xdirection" not in f:
                raise DirectionError(f"{path} is not a direction file: it has no 'xdirection' group")
            xs = _read_group(f["xdirection"], path)
            ys = _read_group(f["ydirection"], path) if "ydirection" in f else None
            names = json.loads(f.attrs["names"]) if "names" in f.attrs else [f"#{i}" for i in range(len(xs))]
            if "spec" in f.attrs:
                known = {fld.name for fld in dataclasses.fields(DirectionSpec)}  # a later version may add fields
                spec = DirectionSpec(**{k: v for k, v in json.loads(f.attrs["spec"]).items() if k in known})
            else:
                spec = DirectionSpec(kind="file", xnorm="", xignore="", two_d=ys is not None)
    except OSError as e:
        raise DirectionError(f"cannot read direction file {path}: {e}") from None
    if ys is not None and len(ys) != len(xs):
        raise DirectionError(f"{path}: xdirection has {len(xs)} tensors but ydirection has {len(ys)}")
    return Directions(ParamVector(names, xs), None if ys is None else ParamVector(names, ys), spec)


def _read_group(group: h5py.Group, path: str) -> list[torch.Tensor]:
    n = len(group)
    missing = [str(i) for i in range(n) if str(i) not in group]
    if missing:
        raise DirectionError(f"{path}: group {group.name} lacks dataset {missing[0]!r} (expected '0'..'{n - 1}')")
    return [torch.from_numpy(np.asarray(group[str(i)][()])) for i in range(n)]


def check_fits(directions: Directions, weights: ParamVector, *, where: str = "direction file") -> None:
    """Refuses directions that do not fit the model, naming the first mismatching tensor.

    Also replaces placeholder names (files of the original tool) by the model's names.
    """
    n_dir, n_model = len(directions.x), len(weights)
    for vec in (directions.x, directions.y):
        if vec is None:
            continue
        for i, (name, t) in enumerate(zip(weights.names, weights)):
            if i >= len(vec):
                break
            if tuple(vec[i].shape) != tuple(t.shape):
                raise DirectionError(
                    f"{where} does not fit the model: tensor {i} ({name!r}) has shape {tuple(vec[i].shape)} "
                    f"in the file but {tuple(t.shape)} in the model")
    if n_dir != n_model:
        name = weights.names[n_dir] if n_dir < n_model else f"#{n_model}"
        raise DirectionError(
            f"{where} does not fit the model: it has {n_dir} tensors, the model has {n_model} "
            f"(first unmatched: {name!r}); was it made with the other --dir_type?")
    for vec in (directions.x, directions.y):
        if vec is not None and any(n.startswith("#") for n in vec.names):
            vec.names = list(weights.names)


# ----------------------------------------------------------------------------------------------------------
# Moving the model
# ----------------------------------------------------------------------------------------------------------

class Perturber:
    """Moves a model to w0 + a*dx (+ b*dy) in place, without allocating per point.

    The change is computed as the original did, ``(dx*a + dy*b)`` in the tensor's dtype and then
    added to w0, so surfaces match it to the last bit; integer buffers (num_batches_tracked) never
    move. The centre (0, 0) reproduces w0 exactly.

    Args:
        model: the model whose live tensors are overwritten.
        directions: the directions; their tensors are copied to the model's device and dtype.
        dir_type: ``weights`` (parameters only; BN running statistics stay at the centre's) or
            ``states`` (the whole state dict).

    Example:
        >>> net = torch.nn.Linear(4, 2)
        >>> w = ParamVector.from_model(net, "weights")
        >>> d = create_random_direction(w, generator=direction_generator(0, 0))
        >>> p = Perturber(net, Directions(d, None, DirectionSpec()), "weights")
        >>> p.set_point_((0.5,)); p.restore_()
    """

    def __init__(self, model: torch.nn.Module, directions: Directions, dir_type: str):
        live = ParamVector.from_model(model, dir_type)
        check_fits(directions, live)
        keep = live.floating()
        self.targets = [live[i] for i in keep]
        self.base = [live[i].detach().clone() for i in keep]
        dirs = [directions.x] if directions.y is None else [directions.x, directions.y]
        self.dirs = [[vec[i].to(device=live[i].device, dtype=live[i].dtype) for i in keep] for vec in dirs]
        # adameq surfaces lie on one line: grid point (a, b) is w0 + (a / sqrt(b)) * x (see adam_directions).
        self._adameq = directions.spec.kind == ADAMEQ and len(self.dirs) == 2
        biggest = max((t.numel() for t in self.targets), default=0)
        self._scratch = {}
        for t in self.targets:  # one scratch buffer per (device, dtype), sized for the largest tensor
            key = (t.device, t.dtype)
            if key not in self._scratch:
                self._scratch[key] = torch.empty(biggest, device=t.device, dtype=t.dtype)

    @torch.no_grad()
    def set_point_(self, coords: Sequence[float]) -> None:
        """Sets the model to the grid point `coords` = (a,) or (a, b)."""
        if len(coords) != len(self.dirs):
            raise ValueError(f"{len(coords)} coordinates for {len(self.dirs)} directions")
        if self._adameq:
            from adam_directions import adameq_coords
            coords = adameq_coords(*coords)
        if len(coords) == 1:
            (a,) = coords
            for t, w0, dx in zip(self.targets, self.base, self.dirs[0]):
                torch.mul(dx, float(a), out=t)
                t.add_(w0)
        else:
            a, b = coords
            for t, w0, dx, dy in zip(self.targets, self.base, self.dirs[0], self.dirs[1]):
                s = self._scratch[(t.device, t.dtype)][: t.numel()].view(t.shape)
                torch.mul(dy, float(b), out=s)
                torch.mul(dx, float(a), out=t)
                t.add_(s)
                t.add_(w0)

    @torch.no_grad()
    def restore_(self) -> None:
        """Puts the centre model back."""
        for t, w0 in zip(self.targets, self.base):
            t.copy_(w0)


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
        d = _details(spec)
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
        d = _details(spec)
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

    ``spec.details`` gives ``params`` (all or dim>1), ``tol``, ``seed`` and ``loss_name``; parameters outside
    the filter get 0. With ``xnorm`` and ``xignore`` both empty the axes are the unit eigenvectors; otherwise
    they are copies normalized as those say (filter normalization gives them the scale of random directions,
    and they are no longer eigenvectors). The eigenvalues (always those of the unit eigenvectors), the solver
    residuals and a sentence saying what the axes are (``axes``, ``eigenvalues_of``) are added to the returned
    spec's details. The sign of an eigenvector is arbitrary; the solver fixes it so that its largest entry is
    positive.
    """
    from curvature import HessianOperator, top_eigenpairs

    if spec.dir_type != "weights":
        raise DirectionError("Hessian directions are parameter vectors: use --dir_type weights")
    if data is None:
        raise DirectionError("Hessian directions need evaluation data")
    d = json.loads(spec.details or "{}")
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
             axes=_axes_are(spec.xnorm, spec.xignore, "the unit eigenvectors", "eigenvectors"))
    out = dataclasses.replace(spec, details=json.dumps(d, sort_keys=True))
    y = (vecs[0].clone() if spec.same_dir else vecs[1]) if spec.two_d else None
    return Directions(vecs[0], y, out)


def _adam_directions(model: torch.nn.Module, spec: DirectionSpec) -> Directions:
    from adam_directions import AdamDirectionError, adam_directions, adam_record, read_adam_state

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
    d["axes"] = _axes_are(spec.xnorm, spec.xignore, raw, "the raw " + ("update direction" if mode == "adameq"
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


# ----------------------------------------------------------------------------------------------------------
# Identity: the settings that decide the values of a spec's directions
# ----------------------------------------------------------------------------------------------------------

UNRECORDED = "(not recorded)"  # a target's or optimizer's checksum in a file written before it was recorded


def _details(spec: DirectionSpec) -> dict:
    try:
        d = json.loads(spec.details or "{}")
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def _checksum(path: str, sha: str) -> Optional[str]:
    return (sha or UNRECORDED) if path else None


def direction_identity(spec: DirectionSpec) -> dict[str, Any]:
    """The settings that decide the values of `spec`'s directions, keyed by the flag that asks for each.

    ``kind`` is random, target, hessian, adam (both modes; ``--adam_mode`` tells them apart), pca or file
    (the original tool's, which records nothing). Models and optimizer states count by checksum, not path;
    ``--ynorm``/``--yignore`` are resolved (None is x's). Results (eigenvalues, residuals, the Adam state's
    step) and settings that do not apply (a 1D target's seed, a same_dir y's norm) are left out, so two files
    with the same identity hold the same directions.

    Example:
        >>> direction_identity(DirectionSpec(seed=5))
        {'kind': 'random', '--dir_type': 'weights', '--xnorm': 'filter', '--xignore': 'biasbn', '--seed': 5, '--idx': 0}
    """
    kind = "adam" if spec.kind in ("adam", ADAMEQ) else spec.kind
    out: dict[str, Any] = {"kind": kind}
    if kind == "file":
        return out
    out["--dir_type"] = spec.dir_type
    if kind in ("random", "hessian", "adam"):
        out["--xnorm"], out["--xignore"] = spec.xnorm, spec.xignore
    if kind == "target":
        out["--model_file2"] = _checksum(spec.model_file2, spec.model2_sha256)
    if kind == "random":
        out["--seed"], out["--idx"] = spec.seed, spec.idx
    if spec.two_d and kind in ("random", "target", "hessian"):
        out["--same_dir"] = spec.same_dir
        if kind == "target" and not spec.same_dir:
            out["--model_file3"] = _checksum(spec.model_file3, spec.model3_sha256)
        if kind in ("random", "target") and not spec.same_dir and not spec.model_file3:
            if kind == "target":  # y is random
                out["--seed"], out["--idx"] = spec.seed, spec.idx
            out["--ynorm"] = spec.xnorm if spec.ynorm is None else spec.ynorm
            out["--yignore"] = spec.xignore if spec.yignore is None else spec.yignore
    d = _details(spec)
    if kind == "hessian":
        out["--hessian_params"] = d.get("params", "all")
        out["--hessian_tol"] = float(d.get("tol", 1e-4))
        out["--hessian_seed"] = int(d.get("seed", 0))
        out["--loss_name"] = d.get("loss_name", "crossentropy")
        out["Hessian set"] = d.get("eig_on", "train")
        if "precision" in d:  # recorded since the Hessian-vector products set their precision flags
            out["--precision"] = d["precision"]
    elif kind == "adam":
        out["--adam_mode"] = "adameq" if spec.kind == ADAMEQ else "add"
        out["--opt_file"] = d.get("opt_sha256") or UNRECORDED
        out["--adam_eps"] = d.get("eps")
    return out


def _show(label: str, value: Any) -> str:
    if label == "--adam_eps" and value is None:
        return "the optimizer's own"
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if label in ("--model_file2", "--model_file3", "--opt_file") and value != UNRECORDED:
        return f"sha256 {str(value)[:12]}"
    return repr(value) if isinstance(value, float) else str(value)


def identity_differences(found: DirectionSpec, asked: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Compares a file's spec with what is asked (keyed as `direction_identity` keys it).

    Returns:
        The differences, each ``"LABEL: found X, asked Y"``, and the labels asked that do not decide the
        values of `found`'s directions. A checksum the file did not record is not compared.

    Example:
        >>> identity_differences(DirectionSpec(seed=5), {"--seed": 6, "--hessian_tol": 1e-6})
        (['--seed: found 5, asked 6'], ['--hessian_tol'])
    """
    have = direction_identity(found)
    diffs, unused = [], []
    for label, want in asked.items():
        if label not in have:
            unused.append(label)
        elif UNRECORDED not in (have[label], want) and have[label] != want:
            diffs.append(f"{label}: found {_show(label, have[label])}, asked {_show(label, want)}")
    return diffs, unused


def describe_spec(spec: DirectionSpec) -> str:
    """One line with a spec's identity, e.g. ``random directions (x and y): --dir_type weights, --seed 123, ...``."""
    ident = direction_identity(spec)
    head = f"{spec.kind} directions ({'x and y' if spec.two_d else 'x only'})"
    if spec.kind == "file":
        return f"a file of the original tool ({'x and y' if spec.two_d else 'x only'}; no settings recorded)"
    parts = [f"{k} {_show(k, v)}" for k, v in ident.items() if k != "kind"]
    if spec.model_file:
        parts.append(f"made for {os.path.basename(spec.model_file)}"
                     + (f" (sha256 {spec.model_sha256[:12]})" if spec.model_sha256 else ""))
    return head + (": " + ", ".join(parts) if parts else "")


def _axes_are(norm: str, ignore: str, vectors: str, kept: str) -> str:
    """What the axes are after `normalize_direction_(norm, ignore)` of `vectors` (``kept``: their name when
    neither is set)."""
    if not norm and not ignore:
        return vectors
    flags = f"--xnorm {norm or 'none'} --xignore {ignore or 'none'}"
    if norm and ignore:
        how = f"{norm}-normalized copies of {vectors}, biases and BN parameters zeroed"
    elif norm:
        how = f"{norm}-normalized copies of {vectors}, biases and BN parameters set to the weights' own"
    else:
        how = f"copies of {vectors} with biases and BN parameters zeroed"
    return f"{how} ({flags}), not {kept}"


def describe_axes(spec: DirectionSpec) -> Optional[str]:
    """The line printed for Hessian and Adam axes: the eigenvalues and which vectors they describe, or which
    vectors the Adam axes are; None for other kinds.

    Example:
        >>> describe_axes(DirectionSpec(kind="hessian", xnorm="", xignore="", details='{"eigenvalues": [2.5]}'))
        'Hessian eigenvalues of the axes (unit eigenvectors): 2.5'
    """
    d = _details(spec)
    if spec.kind == "hessian":
        values = ", ".join(f"{v:.6g}" for v in d.get("eigenvalues", []))
        if not spec.xnorm and not spec.xignore:
            return f"Hessian eigenvalues of the axes (unit eigenvectors): {values}"
        return (f"Hessian eigenvalues of the unit eigenvectors: {values}; the axes are "
                f"{_axes_are(spec.xnorm, spec.xignore, 'them', 'eigenvectors')}")
    if spec.kind in ("adam", ADAMEQ):
        if spec.kind == ADAMEQ:
            raw = "C = m / (sqrt(v) + eps), stepped by x / sqrt(y)"
            axes = _axes_are(spec.xnorm, spec.xignore, "C", "Adam's update direction")
            tail = "" if not (spec.xnorm or spec.xignore) else "; a step k = -lr is Adam's own only for the raw C"
        else:
            raw, axes, tail = "x = m, y = v", _axes_are(spec.xnorm, spec.xignore, "m and v", "the raw moments"), ""
        return f"Adam axes: {raw}" + ("" if axes in ("C", "m and v") else f"; the axes are {axes}") + tail
    return None
