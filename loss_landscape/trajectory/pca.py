"""PCA directions of a training path and the projection of the path onto them (Li et al. 2018, sect. 7).

The path is a folder of checkpoints ``model_{epoch}.t7``. With w_k the weights of the k-th checkpoint and w_n
those of the final one, the rows of the PCA are the differences d_k = w_k - w_n of every checkpoint, the final
one included (its row is zero), as the original tool handed them to sklearn; tensors with dim <= 1 are zero with
``ignore="biasbn"``, and integer buffers (``num_batches_tracked``) are always left out.

Memory (P: entries per checkpoint, K: rows): the K x P matrix of differences is never built in float64. The
K x K Gram matrix G_ij = <d_i, d_j> is accumulated in float64 from a block of B differences held in float32
(B x P x 4 bytes, B = the most that fit in ``max_block_bytes``, at least 1, at most K) while the checkpoints after
the block are streamed one at a time, products taken ``CHUNK`` entries at a time in float64; the directions are
then rebuilt by a second streaming pass into two float64 vectors. Peak, besides the block: about 4 x P x 4
(the model, the final checkpoint, the checkpoint being read and its flat copy) + 2 x P x 8 (the directions) +
B x CHUNK x 8. With b = ceil(K / B) blocks the Gram matrix takes about (b + 1) / 2 passes over the
checkpoints and the directions one more (two passes in all when everything fits one block); the projection
reads them once more and holds 3 x P x 8 (the two directions and one difference in float64).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import h5py
import numpy as np
import torch

from loss_landscape.models import loading as models
from loss_landscape.directions.spec import Directions, DirectionSpec
from loss_landscape.directions.files import save_directions
from loss_landscape.params import ParamVector
from loss_landscape.version import code_version
from loss_landscape.errors import TrajectoryError

IGNORES = ("biasbn", "")
METHODS = ("cos", "lstsq")
MIN_CHECKPOINTS = 3  # two principal components need a centred matrix of rank 2: 3 rows (the final one is 0)
CHUNK = 1 << 20  # float64 products are taken over this many entries at a time
PROJECTION_FORMAT = "loss-landscape trajectory projection"


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    path: str


@dataclass
class PCAResult:
    """The two principal directions and the numbers sklearn's PCA(2) would report for the same rows.

    ``explained_variance_ratio_`` = lambda_c / trace(Gc), ``singular_values_`` = sqrt(lambda_c),
    ``explained_variance_`` = lambda_c / (K - 1), with lambda_c the eigenvalues of the centred Gram
    matrix Gc = J G J (the squared singular values of the centred K x P matrix).
    """

    directions: Directions
    explained_variance_ratio_: np.ndarray
    singular_values_: np.ndarray
    explained_variance_: np.ndarray
    epochs: list[int]
    total_variance: float


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------

def list_checkpoints(model_folder: str, *, prefix: str = "model_", suffix: str = ".t7", start_epoch: int = 0,
                     max_epoch: int = 300, save_epoch: int = 1) -> list[Checkpoint]:
    """The checkpoints start_epoch, start_epoch + save_epoch, ... and always max_epoch (the final one, last).

    Refuses a missing file, naming the first one.

    Example:
        >>> list_checkpoints("trained_nets/vgg9", max_epoch=300, save_epoch=10)  # doctest: +SKIP
    """
    if save_epoch < 1:
        raise TrajectoryError(f"--save_epoch must be >= 1, got {save_epoch}")
    if max_epoch < start_epoch:
        raise TrajectoryError(f"--max_epoch ({max_epoch}) is below --start_epoch ({start_epoch})")
    if not os.path.isdir(model_folder):
        raise TrajectoryError(f"model folder {model_folder} does not exist")
    epochs = list(range(start_epoch, max_epoch + 1, save_epoch))
    if epochs[-1] != max_epoch:
        epochs.append(max_epoch)
    out = [Checkpoint(e, os.path.join(model_folder, f"{prefix}{e}{suffix}")) for e in epochs]
    for c in out:
        if not os.path.isfile(c.path):
            raise TrajectoryError(f"checkpoint {c.path} (epoch {c.epoch}) does not exist; {len(out)} checkpoints "
                                  f"expected for epochs {start_epoch}..{max_epoch} every {save_epoch}")
    return out


class _Reader:
    """Reads checkpoints of one model as flat float32 vectors of the tensors that enter the PCA."""

    def __init__(self, model_name: str, dir_type: str, ignore: str):
        if ignore not in IGNORES:
            raise TrajectoryError(f"unknown ignore {ignore!r}: expected 'biasbn' or 'none'")
        if dir_type not in ("weights", "states"):
            raise TrajectoryError(f"unknown dir_type {dir_type!r}: expected weights or states")
        try:
            models.check_name(model_name)
            self.model = models.build_model(model_name)
        except models.ModelError as e:
            raise TrajectoryError(str(e)) from None
        self.model_name, self.dir_type = model_name, dir_type
        live = ParamVector.from_model(self.model, dir_type)
        self.names, self.shapes = live.names, live.shapes
        # Integer buffers never move a model (net_plotter.Perturber), so they never enter the PCA.
        self.keep = [i for i, t in enumerate(live)
                     if t.is_floating_point() and not (ignore == "biasbn" and t.dim() <= 1)]
        self.numel = sum(live[i].numel() for i in self.keep)

    def read(self, path: str) -> torch.Tensor:
        try:
            models.load_weights(self.model, models.read_state_dict(path), source=f"checkpoint {path}",
                                model_name=self.model_name)
        except models.ModelError as e:
            raise TrajectoryError(str(e)) from None
        live = ParamVector.from_model(self.model, self.dir_type)
        return torch.cat([live[i].detach().reshape(-1).float() for i in self.keep])

    def unflatten(self, flat: torch.Tensor) -> ParamVector:
        """A float32 ParamVector in the model's order and shapes; left-out tensors are zero."""
        tensors = [torch.zeros(s, dtype=torch.float32) for s in self.shapes]
        at = 0
        for i in self.keep:
            n = tensors[i].numel()
            tensors[i] = flat[at:at + n].to(torch.float32).reshape(self.shapes[i]).clone()
            at += n
        return ParamVector(self.names, tensors)

    def flatten(self, vec: ParamVector) -> torch.Tensor:
        return torch.cat([vec[i].detach().reshape(-1).double() for i in self.keep])


def _dot64(block: torch.Tensor, v: torch.Tensor) -> np.ndarray:
    """block @ v in float64, converting at most CHUNK columns at a time."""
    out = torch.zeros(block.shape[0], dtype=torch.float64)
    for s in range(0, v.numel(), CHUNK):
        out += block[:, s:s + CHUNK].double() @ v[s:s + CHUNK].double()
    return out.numpy()


# ----------------------------------------------------------------------------------------------------------
# PCA by the Gram matrix
# ----------------------------------------------------------------------------------------------------------

def gram_matrix(reader: "_Reader", rows: Sequence[Checkpoint], final: torch.Tensor, *,
                max_block_bytes: int = 1 << 30) -> np.ndarray:
    """G_ij = <d_i, d_j> in float64 for d_k = w_k - final, streaming over the checkpoints."""
    k = len(rows)
    block_rows = max(1, min(k, max_block_bytes // max(1, 4 * reader.numel)))
    g = np.zeros((k, k))
    for b0 in range(0, k, block_rows):
        b1 = min(k, b0 + block_rows)
        block = torch.empty((b1 - b0, reader.numel), dtype=torch.float32)
        for i in range(b0, b1):
            block[i - b0] = reader.read(rows[i].path)
            block[i - b0].sub_(final)
        g[b0:b1, b0:b1] = _block_gram(block)
        for j in range(b1, k):  # the rest of the row block, one checkpoint at a time
            col = _dot64(block, reader.read(rows[j].path).sub_(final))
            g[b0:b1, j] = col
            g[j, b0:b1] = col
        del block
    return g


def _block_gram(block: torch.Tensor) -> np.ndarray:
    out = torch.zeros((block.shape[0], block.shape[0]), dtype=torch.float64)
    for s in range(0, block.shape[1], CHUNK):
        c = block[:, s:s + CHUNK].double()
        out += c @ c.T
    return out.numpy()


def pca_from_gram(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The top two eigenpairs of the centred Gram matrix Gc = J G J, J = I - 11^T / K.

    Returns (coefficients B (K x 2) with u_c = sum_k B_kc d_k, eigenvalues lambda (2,), all eigenvalues,
    trace(Gc)). B_kc = (J a_c)_k / sqrt(lambda_c) (J a_c = a_c up to rounding), so u_c = Xc^T a_c / sqrt(lambda_c),
    the c-th right singular vector of the centred matrix Xc. Signs: the largest |a_kc| is positive (sklearn's
    u-based svd_flip rule).
    """
    k = g.shape[0]
    j = np.eye(k) - 1.0 / k
    gc = j @ g @ j
    gc = (gc + gc.T) / 2
    lam, a = np.linalg.eigh(gc)
    order = np.argsort(lam)[::-1]
    lam, a = lam[order], a[:, order]
    total = float(np.trace(gc))
    if not (lam[1] > 1e-12 * max(total, 0.0)) or total <= 0:
        raise TrajectoryError(f"the checkpoints span fewer than 2 dimensions around their mean (variances "
                              f"{lam[0]:.3g}, {lam[1]:.3g}): no second principal direction")
    a2 = a[:, :2].copy()
    for c in range(2):
        if a2[np.argmax(np.abs(a2[:, c])), c] < 0:
            a2[:, c] = -a2[:, c]
    coef = (j @ a2) / np.sqrt(lam[:2])
    return coef, lam[:2], lam, total


def pca_directions(model_name: str, checkpoints: Sequence[Checkpoint], *, dir_type: str = "weights",
                   ignore: str = "biasbn", max_block_bytes: int = 1 << 30, final: Optional[Checkpoint] = None,
                   log: Callable[..., None] = print) -> PCAResult:
    """The two principal directions of the path, as sklearn's PCA(2) of the rows d_k = w_k - w_final.

    Args:
        model_name: a registry name, embedded name or ``pkg.module:factory``.
        checkpoints: in epoch order; the last is the final model.
        dir_type: ``weights`` (parameters) or ``states`` (the full state dict).
        ignore: ``biasbn`` zeroes tensors with dim <= 1, ``""`` keeps them.
        max_block_bytes: at most this many bytes of float32 differences are held at once.
        final: the model the differences are taken to (default: the last checkpoint). Several runs share one
            basis when `checkpoints` holds all their checkpoints and `final` is one run's final model.

    Returns:
        A `PCAResult`; its directions are float32 unit vectors (to float32 rounding) in the model's tensor
        order and shapes, with kind "pca" in the spec.

    Example:
        >>> res = pca_directions("digits_mlp", list_checkpoints("runs/mlp", max_epoch=30))  # doctest: +SKIP
        >>> res.explained_variance_ratio_  # doctest: +SKIP
        array([0.81, 0.11])
    """
    if len(checkpoints) < MIN_CHECKPOINTS:
        raise TrajectoryError(f"PCA needs at least {MIN_CHECKPOINTS} checkpoints (two components of the path), "
                              f"found {len(checkpoints)}")
    reader = _Reader(model_name, dir_type, ignore)
    final_ckpt, rows = final or checkpoints[-1], list(checkpoints)  # the final row is zero, as in the original
    final = reader.read(final_ckpt.path)
    log(f"PCA of {len(rows)} differences to epoch {final_ckpt.epoch}, {reader.numel:,} entries each")
    g = gram_matrix(reader, rows, final, max_block_bytes=max_block_bytes)
    coef, lam, _, total = pca_from_gram(g)
    u = torch.zeros((2, reader.numel), dtype=torch.float64)
    for k, c in enumerate(rows):  # second pass: u_c = sum_k coef_kc d_k, accumulated in float64
        d = reader.read(c.path).sub_(final)
        u[0].add_(d, alpha=float(coef[k, 0]))
        u[1].add_(d, alpha=float(coef[k, 1]))
        del d
    spec = DirectionSpec(dir_type=dir_type, kind="pca", xnorm="", xignore=ignore, ynorm="", yignore=ignore,
                         seed=0, two_d=True, model_file=final_ckpt.path,
                         model_sha256=models.file_sha256(final_ckpt.path))
    dirs = Directions(reader.unflatten(u[0]), reader.unflatten(u[1]), spec)
    n = len(rows)
    return PCAResult(dirs, lam / total, np.sqrt(lam), lam / (n - 1), [c.epoch for c in checkpoints], total)


def save_pca_directions(path: str, result: PCAResult, *, extra: Optional[dict] = None) -> None:
    """`net_plotter.save_directions`, then the original's root datasets ``explained_variance_ratio_``,
    ``singular_values_``, ``explained_variance_`` (float64, length 2) and a ``pca`` JSON attribute."""
    save_directions(path, result.directions)
    with h5py.File(path, "r+") as f:
        f["explained_variance_ratio_"] = np.asarray(result.explained_variance_ratio_, dtype=np.float64)
        f["singular_values_"] = np.asarray(result.singular_values_, dtype=np.float64)
        f["explained_variance_"] = np.asarray(result.explained_variance_, dtype=np.float64)
        f.attrs["pca"] = json.dumps({"epochs": result.epochs, "rows": "w_k - w_final, k < final",
                                     "total_variance": result.total_variance, **(extra or {})})


# ----------------------------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Projection:
    """Coordinates of each checkpoint in the plane of two directions, and how far it is from that plane.

    ``distance[k]`` = ||d_k - (a_k u + b_k v)|| with (a_k, b_k) the least-squares coordinates, whatever
    `method` gave x and y; ``relative_distance[k]`` = distance / ||d_k|| (NaN for d_k = 0, the final model).
    """

    epochs: list[int]
    x: np.ndarray
    y: np.ndarray
    method: str
    distance: np.ndarray
    norm: np.ndarray

    @property
    def relative_distance(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.norm > 0, self.distance / np.where(self.norm > 0, self.norm, 1), np.nan)


def project_trajectory(model_name: str, checkpoints: Sequence[Checkpoint], directions: Directions, *,
                       final: Checkpoint, method: str = "cos", ignore: Optional[str] = None) -> Projection:
    """Projects d_k = w_k - w_final of every checkpoint onto the plane of directions.x (u) and .y (v).

    ``cos`` (the original's project_1D): x_k = <d_k, u> / ||u||, y_k = <d_k, v> / ||v||.
    ``lstsq``: (x_k, y_k) minimizes ||d_k - x u - y v||, i.e. solves [[uu, uv], [uv, vv]] [x, y] =
    [<d_k, u>, <d_k, v>]. For PCA directions (orthonormal up to float32 rounding) both agree. Products are
    float64 over the float32 directions as stored; the tensors left out of the PCA (dim <= 1 with biasbn,
    integer buffers) are left out here too. The final checkpoint projects to (0, 0).
    """
    if method not in METHODS:
        raise TrajectoryError(f"unknown projection method {method!r}: expected one of {', '.join(METHODS)}")
    if directions.y is None:
        raise TrajectoryError("projecting a trajectory needs two directions (a 2D direction file)")
    spec = directions.spec
    reader = _Reader(model_name, spec.dir_type, spec.xignore if ignore is None else ignore)
    if len(directions.x) != len(reader.names) or any(tuple(t.shape) != s for t, s in zip(directions.x, reader.shapes)):
        raise TrajectoryError(f"the directions do not fit model {model_name} ({spec.dir_type})")
    u, v = reader.flatten(directions.x), reader.flatten(directions.y)
    m = np.array([[u @ u, u @ v], [u @ v, v @ v]], dtype=np.float64)
    w_final = reader.read(final.path)
    xs, ys, dist, norms = [], [], [], []
    for c in checkpoints:
        d = reader.read(c.path).sub_(w_final).double()
        g = np.array([float(d @ u), float(d @ v)])
        ab = np.linalg.solve(m, g)
        if method == "cos":
            xs.append(g[0] / math.sqrt(m[0, 0]))
            ys.append(g[1] / math.sqrt(m[1, 1]))
        else:
            xs.append(ab[0])
            ys.append(ab[1])
        dist.append(_residual_norm(d, u, v, float(ab[0]), float(ab[1])))
        norms.append(float(torch.linalg.vector_norm(d)))
    return Projection([c.epoch for c in checkpoints], np.array(xs), np.array(ys), method, np.array(dist),
                      np.array(norms))


def _residual_norm(d: torch.Tensor, u: torch.Tensor, v: torch.Tensor, a: float, b: float) -> float:
    """||d - a u - b v|| in float64, CHUNK entries at a time (no full-length temporaries)."""
    acc = 0.0
    for s in range(0, d.numel(), CHUNK):
        r = d[s:s + CHUNK] - a * u[s:s + CHUNK] - b * v[s:s + CHUNK]
        acc += float(r @ r)
    return math.sqrt(acc)


def write_projection(f: h5py.Group, proj: Projection, *, dir_file: str = "") -> None:
    """Writes `proj` into the open file or group `f` in the original's layout: datasets ``proj_xcoord``,
    ``proj_ycoord``; attributes format, epochs, method, dir_file and code_version."""
    f["proj_xcoord"] = proj.x
    f["proj_ycoord"] = proj.y
    f.attrs["format"] = PROJECTION_FORMAT
    f.attrs["epochs"] = np.asarray(proj.epochs, dtype=np.int64)
    f.attrs["method"] = proj.method
    f.attrs["dir_file"] = dir_file
    f.attrs["code_version"] = code_version()


def faithfulness(proj: Projection, pca: Optional[PCAResult] = None) -> dict:
    """What the 2D picture leaves out: explained variance and each checkpoint's distance from the plane."""
    rel = proj.relative_distance
    out = {"method": proj.method,
           "checkpoints": [{"epoch": e, "x": float(x), "y": float(y), "distance": float(dd), "norm": float(n),
                            "relative_distance": None if not np.isfinite(r) else float(r)}
                           for e, x, y, dd, n, r in zip(proj.epochs, proj.x, proj.y, proj.distance, proj.norm, rel)]}
    if pca is not None:
        out["explained_variance_ratio_"] = [float(r) for r in pca.explained_variance_ratio_]
        out["explained_variance_ratio_sum"] = float(np.sum(pca.explained_variance_ratio_))
        out["singular_values_"] = [float(s) for s in pca.singular_values_]
        out["explained_variance_"] = [float(s) for s in pca.explained_variance_]
    finite = rel[np.isfinite(rel)]
    out["max_relative_distance"] = float(finite.max()) if finite.size else None
    return out


def faithfulness_lines(report: dict) -> list[str]:
    lines = []
    if "explained_variance_ratio_" in report:
        r = report["explained_variance_ratio_"]
        lines.append(f"explained variance ratio: {100 * r[0]:.2f} % + {100 * r[1]:.2f} % = "
                     f"{100 * (r[0] + r[1]):.2f} % of the path's variance")
    lines.append(f"{'epoch':>7} {'x':>10} {'y':>10} {'dist to plane':>14} {'relative':>9}")
    for c in report["checkpoints"]:
        rel = "-" if c["relative_distance"] is None else f"{c['relative_distance']:.3f}"
        lines.append(f"{c['epoch']:>7} {c['x']:>10.4g} {c['y']:>10.4g} {c['distance']:>14.4g} {rel:>9}")
    return lines


def default_dir_file(model_folder: str, *, dir_type: str, ignore: str, save_epoch: int) -> str:
    """The original's place: ``<folder>/PCA_<dir_type>[_ignore=biasbn]_save_epoch=<n>/directions.h5``."""
    name = f"PCA_{dir_type}" + (f"_ignore={ignore}" if ignore else "") + f"_save_epoch={save_epoch}"
    return os.path.join(model_folder, name, "directions.h5")


def default_proj_file(dir_file: str, method: str) -> str:
    """The original's name: ``<dir_file>_proj_<method>.h5``."""
    return f"{dir_file}_proj_{method}.h5"


__all__ = ["Checkpoint", "PCAResult", "Projection", "TrajectoryError", "list_checkpoints", "pca_directions",
           "pca_from_gram", "gram_matrix", "save_pca_directions", "project_trajectory", "write_projection",
           "faithfulness", "faithfulness_lines", "default_dir_file", "default_proj_file"]
