"""Adam directions: the moment vectors of a saved Adam state as plotting axes, and LLA's ``adameq`` update.

A training run (``cifar10/main.py --optimizer adam``) writes ``opt_state_E.t7`` = ``{'optimizer':
optimizer.state_dict()}`` beside ``model_E.t7``. For every parameter the state holds Adam's first moment
``exp_avg`` (m, a running mean of the gradients) and second moment ``exp_avg_sq`` (v, a running mean of the
squared gradients). This module turns them into directions for ``--dir_type weights`` in two modes:

``add`` (LLA ``--axes adam --mode add``)
    x = m, y = v, plain axes: the surface is L(w0 + a*m + b*v). m points along the averaged gradient
    (ascent; Adam steps against it), v >= 0 is a per-parameter curvature/noise proxy. With ``norm`` they are
    rescaled against the weights exactly like random directions (`net_plotter.normalize_direction_`).

``adameq`` (LLA ``--axes adam --mode adameq``)
    w(a, b) = w0 + k(a, b) * C with C = m / (sqrt(v) + eps), the direction of Adam's own update (without the
    learning rate and the bias corrections), and the step multiplier k(a, b) = a / sqrt(b) (LLA's default
    ``b_sqrt``) or a / b. The grid's x coordinate a is the signed step, its y coordinate b a second-moment
    scale that shrinks (b > 1) or stretches (b < 1) the step, so the surface shows the loss along Adam's update
    for a family of effective learning rates. k = -lr is the next Adam step as training would take it late in
    a run, when the bias corrections (1 - beta1^t), sqrt(1 - beta2^t) are close to 1.
    This is NOT linear in (a, b): the whole surface lies on the line w0 + k*C. It is stored as the directions
    x = C, y = 0 with kind ``adam-adameq``, and `net_plotter.Perturber` maps each grid point of such directions
    through ``adameq_coords(a, b) = (k(a, b), 0)``; `adameq_point` is the same point written out.

What LLA does, from GabdullinN/loss-landscape-analysis (the LLA library, Apache-2.0; read, not copied):

* ``src/src_lla/loss_landscapes/dev.py``, ``vec_from_optim``: dir_one = ``state[i]['exp_avg']``, dir_two =
  ``state[i]['exp_avg_sq']`` for i = 0..N-1 of ``optimizer.state_dict()['state']`` (times lr=1); the fallback
  ``vec_model_optim`` puts them in ``model.named_parameters()`` order by state id, zeros where a parameter has no
  state. We read the same two tensors, mapped the same way (or by ``param_names`` when the state has them).
* ``src/src_lla/loss_landscapes/main.py``, ``random_plane(..., mode='adameq'|'moment', b_sqrt=True)``: both
  vectors are normalized (``normalization``, default None) and multiplied by distance/steps; then
  ``C = dir_one / (sqrt(dir_two) + 1e-6)``, ``a = arange(-1, 1, 2/steps)`` (rows), ``b = arange(0.1, 2.1,
  2/steps)`` (columns; ``arange(-1, 1, 2/steps)`` without b_sqrt), and the point (i, j) is
  ``w0 + a[i]/sqrt(b[j]) * C`` (``a[i]/b[j]`` without b_sqrt). LLA's steps=40 grid is ours with
  ``--x=-1:0.95:40 --y=0.1:2.05:40``. In ``add`` mode the plane is w0 + a*dir_one + b*dir_two, centred.
* ``README.md``, ``py_arguments-readme.md``: "adameq allows to use weight update equation of Adam optimizer.
  The latter requires Adam axes."; the README example uses ``--axes adam --mode adameq --norm filter``.

Where we differ from LLA, on purpose:

* eps: LLA hard-codes 1e-6 (and an unused ``gamma = 1e-3``); by default we use each parameter's own ``eps``
  from its param group (torch's default 1e-8), i.e. Adam's real denominator. Pass ``eps=1e-6`` for LLA's.
* scale: LLA scales m and v by distance/steps *before* forming C, so its C is sqrt(distance/steps) * m /
  (sqrt(v) + eps/sqrt(distance/steps)) (about 0.158 * m/sqrt(v) at its defaults); we leave the factor out, so
  k multiplies the raw m/(sqrt(v)+eps) and grid ranges keep their meaning whatever the resolution.
* norm in adameq: LLA normalizes m and v separately and then combines them, which gives C filters whose norm
  grows like sqrt(|w_f|); we normalize C itself, so ``norm=filter`` gives C the weights' filter norms as for
  any other direction.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import nn

from loss_landscape.directions.spec import IGNORES, NORMS, Directions, DirectionSpec
from loss_landscape.directions.vectors import normalize_direction_
from loss_landscape.params import ParamVector
from loss_landscape.errors import AdamDirectionError

ADAM_MODES = ("add", "adameq")


@dataclass
class AdamState:
    """The moments of a saved Adam state, in the model's parameter order, on the CPU in float32.

    ``eps``, ``lr`` and ``betas`` are per tensor (each parameter's param group); ``step`` is the largest
    step count found; ``has_state[i]`` is False where the optimizer never stepped parameter i (m, v are
    zeros there, as in LLA's ``vec_model_optim``).
    """

    opt_file: str
    m: ParamVector
    v: ParamVector
    eps: list[float]
    lr: list[float]
    betas: list[tuple[float, float]]
    step: int
    has_state: list[bool]


# ----------------------------------------------------------------------------------------------------------
# Reading opt_state_E.t7
# ----------------------------------------------------------------------------------------------------------

_GUESS_BY_STATE = (("momentum_buffer", "SGD with momentum"), ("sum", "Adagrad"), ("square_avg", "RMSprop"),
                   ("exp_inf", "Adamax"), ("acc_delta", "Adadelta"), ("prev", "Rprop"), ("ax", "ASGD"))
_GUESS_BY_GROUP = (("betas", "Adam"), ("lr_decay", "Adagrad"), ("centered", "RMSprop"),
                   ("dampening", "SGD"), ("rho", "Adadelta"), ("etas", "Rprop"), ("lambd", "ASGD"))


def _guess_optimizer(sd: dict) -> str:
    keys = set()
    for entry in sd["state"].values():
        if isinstance(entry, dict):
            keys.update(entry)
    if {"exp_avg", "exp_avg_sq"} <= keys:
        return "Adam"
    for key, name in _GUESS_BY_STATE:
        if key in keys:
            return name
    group_keys = set().union(*(g.keys() for g in sd["param_groups"] if isinstance(g, dict)))
    for key, name in _GUESS_BY_GROUP:
        if key in group_keys:
            return name
    return "an unknown optimizer"


def _load(opt_file: str) -> dict:
    if not os.path.isfile(opt_file):
        raise AdamDirectionError(f"optimizer state file {opt_file} does not exist "
                                 f"(expected an opt_state_E.t7 written by training with --optimizer adam)")
    try:
        import numpy as np
        core = getattr(np, "_core", None) or np.core
        safe = [core.multiarray.scalar, np.dtype, type(np.dtype("float64")), type(np.dtype("float32"))]
        with torch.serialization.safe_globals(safe):  # old model files passed by mistake store numpy scalars
            obj = torch.load(opt_file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AdamDirectionError(f"cannot read optimizer state file {opt_file}: {first[:200]}") from None
    if isinstance(obj, dict) and isinstance(obj.get("optimizer"), dict):
        obj = obj["optimizer"]
    if isinstance(obj, dict) and isinstance(obj.get("state"), dict) and isinstance(obj.get("param_groups"), list):
        return obj
    if isinstance(obj, dict) and (any(k in obj for k in ("state_dict", "model_state_dict", "model"))
                                  or (obj and all(isinstance(v, torch.Tensor) for v in obj.values()))):
        raise AdamDirectionError(f"{opt_file} is a model checkpoint, not an optimizer state: expected the "
                                 f"opt_state_E.t7 beside model_E.t7 "
                                 f"({{'optimizer': {{'state', 'param_groups'}}}})")
    found = f"keys {sorted(map(str, obj))[:5]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise AdamDirectionError(f"{opt_file} holds no optimizer state: found {found}, expected "
                             f"{{'optimizer': {{'state', 'param_groups'}}}} or a bare optimizer state_dict")


def read_adam_state(opt_file: str, model: nn.Module) -> AdamState:
    """Reads the Adam moments of `opt_file` for `model`, checking that they belong to it.

    Parameters are matched by ``param_names`` when the optimizer was built from ``named_parameters()``,
    otherwise by position: state ids follow ``param_groups`` order, which is ``model.parameters()`` order
    for an optimizer built over ``model.parameters()`` as ``loss_landscape.training`` does.

    Raises:
        AdamDirectionError: missing or unreadable file, a model file, a non-Adam state (naming the optimizer
            it looks like), an Adam state that never stepped, or parameters that do not fit the model
            (the first mismatch named with both shapes).
    """
    sd = _load(opt_file)
    guess = _guess_optimizer(sd)
    if guess != "Adam":
        raise AdamDirectionError(f"{opt_file} is not an Adam state: it looks like {guess} (no exp_avg/"
                                 f"exp_avg_sq moments); train with --optimizer adam")
    if not any(isinstance(e, dict) and "exp_avg" in e for e in sd["state"].values()):
        raise AdamDirectionError(f"{opt_file} holds an Adam state with no moments: the optimizer never took "
                                 f"a step (expected an opt_state_E.t7 saved after training)")

    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    ids, id_group, id_name = [], {}, {}
    for group in sd["param_groups"]:
        group_names = group.get("param_names")
        for k, pid in enumerate(group.get("params", [])):
            ids.append(pid)
            id_group[pid] = group
            if group_names is not None and k < len(group_names):
                id_name[pid] = group_names[k]
    if len(ids) != len(names):
        if len(ids) < len(names):
            first = f"first unmatched: model tensor {len(ids)} ({names[len(ids)]!r})"
        else:
            extra = sd["state"].get(ids[len(names)], {}).get("exp_avg")
            shape = "" if extra is None else f" of shape {tuple(extra.shape)}"
            first = f"first unmatched: optimizer tensor {len(names)}{shape}"
        raise AdamDirectionError(f"{opt_file} does not fit the model: the optimizer holds {len(ids)} parameter "
                                 f"tensors, the model has {len(names)} ({first})")
    if len(id_name) == len(ids):
        strip = all(str(n).startswith("module.") for n in id_name.values())
        by_name = {(str(n)[len("module."):] if strip else str(n)): pid for pid, n in id_name.items()}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise AdamDirectionError(f"{opt_file} does not fit the model: it has no parameter {missing[0]!r} "
                                     f"(found {sorted(by_name)[0]!r} ...)")
        ids = [by_name[n] for n in names]

    m, v, eps, lr, betas, has_state, step = [], [], [], [], [], [], 0
    for i, (name, p, pid) in enumerate(zip(names, params, ids)):
        entry = sd["state"].get(pid, {})
        group = id_group[pid]
        ok = isinstance(entry, dict) and "exp_avg" in entry and "exp_avg_sq" in entry
        if ok:
            for key in ("exp_avg", "exp_avg_sq"):
                if tuple(entry[key].shape) != tuple(p.shape):
                    raise AdamDirectionError(
                        f"{opt_file} does not fit the model: tensor {i} ({name!r}) has shape "
                        f"{tuple(entry[key].shape)} in the optimizer state but {tuple(p.shape)} in the model")
            m.append(entry["exp_avg"].detach().to("cpu", torch.float32).clone())
            v.append(entry["exp_avg_sq"].detach().to("cpu", torch.float32).clone())
            step = max(step, int(float(entry.get("step", 0))))
        else:  # never stepped (no gradient): no moments, as LLA's vec_model_optim
            m.append(torch.zeros(p.shape, dtype=torch.float32))
            v.append(torch.zeros(p.shape, dtype=torch.float32))
        has_state.append(ok)
        eps.append(float(group.get("eps", 1e-8)))
        lr.append(float(group.get("lr", float("nan"))))
        b = group.get("betas", (float("nan"), float("nan")))
        betas.append((float(b[0]), float(b[1])))
    return AdamState(opt_file, ParamVector(names, m), ParamVector(names, v), eps, lr, betas, step, has_state)


def read_adam_moments(opt_file: str, model: nn.Module) -> tuple[ParamVector, ParamVector]:
    """(m, v) = (exp_avg, exp_avg_sq) of an Adam state saved by training, named like the model's weights.

    Example:
        >>> m, v = read_adam_moments("trained/opt_state_10.t7", net)  # doctest: +SKIP
        >>> m.names == ParamVector.from_model(net, "weights").names  # doctest: +SKIP
        True
    """
    s = read_adam_state(opt_file, model)
    return s.m, s.v


# ----------------------------------------------------------------------------------------------------------
# adameq: LLA's Adam update equation on the grid
# ----------------------------------------------------------------------------------------------------------

def adameq_multiplier(a: float, b: float, *, b_sqrt: bool = True) -> float:
    """LLA's step multiplier k(a, b) = a / sqrt(b) (``b_sqrt``) or a / b at grid coordinates (a, b).

    Example:
        >>> adameq_multiplier(0.5, 0.25)
        1.0
    """
    if b_sqrt:
        if not b > 0:
            raise AdamDirectionError(f"adameq needs y coordinates > 0 (k = x / sqrt(y)); found y = {b}")
        return float(a) / math.sqrt(float(b))
    if b == 0:
        raise AdamDirectionError("adameq without b_sqrt needs y coordinates != 0 (k = x / y); found y = 0")
    return float(a) / float(b)


def adameq_coords(a: float, b: float, *, b_sqrt: bool = True) -> tuple[float, float]:
    """The `Perturber` coordinates for grid point (a, b) of an adameq surface: (k(a, b), 0)."""
    return adameq_multiplier(a, b, b_sqrt=b_sqrt), 0.0


def adam_update_direction(m: ParamVector, v: ParamVector, eps: Union[float, Sequence[float]]) -> ParamVector:
    """C = m / (sqrt(v) + eps) tensor by tensor, in float32 (eps a number or one per tensor).

    Where the denominator is 0 (eps = 0 and v = 0) C is 0, not NaN.
    """
    eps_list = [float(eps)] * len(m) if isinstance(eps, (int, float)) else [float(e) for e in eps]
    if len(eps_list) != len(m):
        raise AdamDirectionError(f"{len(eps_list)} eps values for {len(m)} tensors")
    out = []
    for mt, vt, e in zip(m, v, eps_list):
        denom = vt.to(torch.float32).sqrt().add_(e)
        c = mt.to(torch.float32) / denom
        out.append(torch.where(denom > 0, c, torch.zeros_like(c)))
    return ParamVector(m.names, out)


def adameq_point(w0: ParamVector, m: ParamVector, v: ParamVector, a: float, b: float,
                 eps: Union[float, Sequence[float]], *, b_sqrt: bool = True) -> ParamVector:
    """LLA's adameq weights at grid point (a, b): w0 + k(a, b) * m / (sqrt(v) + eps), without normalization.

    Example:
        >>> w = ParamVector(["w"], [torch.zeros(2)])
        >>> adameq_point(w, ParamVector(["w"], [torch.ones(2)]), ParamVector(["w"], [torch.full((2,), 4.)]),
        ...              1.0, 0.25, 0.0)[0].tolist()
        [1.0, 1.0]
    """
    k = adameq_multiplier(a, b, b_sqrt=b_sqrt)
    c = adam_update_direction(m, v, eps)
    return ParamVector(w0.names, [w.detach().to(torch.float32) + ct * k for w, ct in zip(w0, c)])


# ----------------------------------------------------------------------------------------------------------
# Directions
# ----------------------------------------------------------------------------------------------------------

def adam_kind(mode: str) -> str:
    """The ``DirectionSpec.kind`` recorded for a mode: ``adam`` (x = m, y = v) or ``adam-adameq``."""
    _check_mode(mode)
    return "adam" if mode == "add" else "adam-adameq"


def _check_mode(mode: str) -> None:
    if mode not in ADAM_MODES:
        raise AdamDirectionError(f"unknown adam mode {mode!r}: expected one of {', '.join(ADAM_MODES)}")


def _normalize(d: ParamVector, weights: ParamVector, norm: str, ignore: str) -> None:
    # With neither norm nor ignore the moments stay raw (LLA's normalization=None): normalize_direction_
    # would otherwise copy the weights into biases and BN tensors (the original tool's ignore='' rule).
    if norm or ignore:
        normalize_direction_(d, weights, norm=norm, ignore=ignore)


def adam_directions(model: nn.Module, opt_file: str, *, mode: str = "add", norm: str = "", ignore: str = "",
                    eps: Optional[float] = None, state: Optional[AdamState] = None) -> Directions:
    """2D ``weights`` directions from the Adam state in `opt_file` (see the module docstring for the meaning).

    Args:
        model: the centre model (its weights are the reference for `norm`).
        opt_file: ``opt_state_E.t7`` written by training with Adam.
        mode: ``add``: x = m, y = v; ``adameq``: x = m / (sqrt(v) + eps), y = 0; the Perturber maps grid
            point (a, b) of these directions to w0 + k(a, b) * x.
        norm, ignore: as for random directions (`net_plotter.normalize_direction_`), applied to m and v
            (``add``) or to the update direction (``adameq``); both empty leaves the moments raw.
        eps: the denominator's epsilon for ``adameq``; None takes each parameter's ``eps`` from its param
            group (Adam's own); LLA uses 1e-6.
        state: an `AdamState` already read from `opt_file` (saves reading it twice).

    Returns:
        Directions whose spec has ``kind`` = `adam_kind(mode)`, ``two_d`` and the norm/ignore; the optimizer
        file, its mode and eps are in `adam_record`.

    Example:
        >>> d = adam_directions(net, "trained/opt_state_10.t7", mode="adameq")  # doctest: +SKIP
        >>> p = Perturber(net, d, "weights"); p.set_point_((-0.5, 1.0))  # w0 + (-0.5 / sqrt(1.0)) * x  # doctest: +SKIP
    """
    _check_mode(mode)
    if norm not in NORMS:
        known = ", ".join(n or repr(n) for n in NORMS)
        raise AdamDirectionError(f"unknown norm {norm!r}: expected one of {known}")
    if ignore not in IGNORES:
        raise AdamDirectionError(f"unknown ignore {ignore!r}: expected 'biasbn' or ''")
    if eps is not None and not (eps >= 0 and math.isfinite(eps)):
        raise AdamDirectionError(f"eps must be a finite number >= 0; found {eps}")
    s = state if state is not None else read_adam_state(opt_file, model)
    weights = ParamVector.from_model(model, "weights").to("cpu", torch.float32)
    if s.m.names != weights.names:
        raise AdamDirectionError(f"the Adam state of {s.opt_file} was read for another model")
    if mode == "add":
        x, y = s.m.clone(), s.v.clone()
        _normalize(x, weights, norm, ignore)
        _normalize(y, weights, norm, ignore)
    else:
        x = adam_update_direction(s.m, s.v, s.eps if eps is None else eps)
        _normalize(x, weights, norm, ignore)
        y = ParamVector(x.names, [torch.zeros_like(t) for t in x])
    spec = DirectionSpec(dir_type="weights", kind=adam_kind(mode), xnorm=norm, xignore=ignore, two_d=True)
    return Directions(x, y, spec)


def adam_record(state: AdamState, *, mode: str, eps: Optional[float] = None, b_sqrt: bool = True,
                opt_sha256: str = "") -> dict:
    """What an Adam surface must record beyond `DirectionSpec` (proposed as its fields ``opt_file``,
    ``opt_sha256``, ``adam_mode``, ``adam_eps``, ``adam_b_sqrt``; plus the state's step and lr for reference).

    ``adam_eps`` is the eps given, or the single stored value when eps is None (a list when groups differ).
    """
    _check_mode(mode)
    stored = sorted(set(state.eps))
    used = eps if eps is not None else (stored[0] if len(stored) == 1 else list(state.eps))
    lrs = sorted(set(state.lr))
    return {"opt_file": state.opt_file, "opt_sha256": opt_sha256, "adam_mode": mode, "adam_eps": used,
            "adam_b_sqrt": bool(b_sqrt), "adam_step": state.step,
            "adam_lr": lrs[0] if len(lrs) == 1 else list(state.lr)}
