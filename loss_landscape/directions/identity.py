"""The identity of a spec's directions: the settings that decide their values, differences, descriptions.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional


from loss_landscape.directions.spec import ADAMEQ, DirectionSpec


# ----------------------------------------------------------------------------------------------------------
# Identity: the settings that decide the values of a spec's directions
# ----------------------------------------------------------------------------------------------------------

UNRECORDED = "(not recorded)"  # a target's or optimizer's checksum in a file written before it was recorded


def spec_details(spec: DirectionSpec) -> dict:
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
    d = spec_details(spec)
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


def axes_are(norm: str, ignore: str, vectors: str, kept: str) -> str:
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
    d = spec_details(spec)
    if spec.kind == "hessian":
        values = ", ".join(f"{v:.6g}" for v in d.get("eigenvalues", []))
        if not spec.xnorm and not spec.xignore:
            return f"Hessian eigenvalues of the axes (unit eigenvectors): {values}"
        return (f"Hessian eigenvalues of the unit eigenvectors: {values}; the axes are "
                f"{axes_are(spec.xnorm, spec.xignore, 'them', 'eigenvectors')}")
    if spec.kind in ("adam", ADAMEQ):
        if spec.kind == ADAMEQ:
            raw = "C = m / (sqrt(v) + eps), stepped by x / sqrt(y)"
            axes = axes_are(spec.xnorm, spec.xignore, "C", "Adam's update direction")
            tail = "" if not (spec.xnorm or spec.xignore) else "; a step k = -lr is Adam's own only for the raw C"
        else:
            raw, axes, tail = "x = m, y = v", axes_are(spec.xnorm, spec.xignore, "m and v", "the raw moments"), ""
        return f"Adam axes: {raw}" + ("" if axes in ("C", "m and v") else f"; the axes are {axes}") + tail
    return None
