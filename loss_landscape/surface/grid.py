"""What a surface job is: its axes, grid, the fields that identify it, and its provenance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

import numpy as np



FORMAT = "loss-landscape surface"
FORMAT_VERSION = 1
# Each group of values is written together and has one done mask, ``<group>_done``, whose ``datasets`` attribute
# lists them. These are the groups of files made before that attribute (and of classification losses).
GROUP_DATASETS = {"train": ("train_loss", "train_acc"), "test": ("test_loss", "test_acc"),
                  "eig": ("max_eig", "min_eig")}
GROUPS = tuple(GROUP_DATASETS)
SPLITS = ("train", "test")


@dataclass(frozen=True)
class ValueGroup:
    """Values written together, with one done mask ``<name>_done``.

    Attributes:
        name: ``train``/``test`` (the loss, and the accuracy where the loss has one), ``<split>_<metric>`` (one
            metric), or ``eig`` (the eigenvalue maps).
        datasets: the value datasets, in the order the evaluator returns them.
        split: the evaluation set (``train``/``test``); empty for ``eig``.
        quantities: what `evaluation.evaluate_values` calls each dataset's value (``loss``, ``acc``, a metric).
        metric: the metric's spec (``top5``, ``pkg.module:fn``), recorded on the done mask; a file refuses the same
            name for another spec.
    """

    name: str
    datasets: tuple[str, ...]
    split: str = ""
    quantities: tuple[str, ...] = ()
    metric: str = ""

    @classmethod
    def named(cls, name: str) -> "ValueGroup":
        """One of the fixed groups (`GROUP_DATASETS`)."""
        split = name if name in SPLITS else ""
        return cls(name, GROUP_DATASETS[name], split, ("loss", "acc") if split else ())


def value_groups(eval_on: tuple[str, ...], *, accuracy: bool = True,
                 metrics: tuple[tuple[str, str], ...] = (), estimates: bool = False) -> tuple[ValueGroup, ...]:
    """The groups a surface of the sets `eval_on` holds: per set, its loss (and accuracy, where the loss has one)
    and one group per metric (name, spec). With `estimates` (``--tolerance``) the set's group also holds
    ``<set>_loss_stderr`` (the standard error of the estimated loss) and ``<set>_samples`` (the samples used).

    Example:
        >>> [g.name for g in value_groups(("train",), metrics=(("top5", "top5"),))]
        ['train', 'train_top5']
        >>> value_groups(("test",), accuracy=False)[0].datasets
        ('test_loss',)
    """
    out = []
    for split in eval_on:
        quantities = ("loss", "acc") if accuracy else ("loss",)
        if estimates:
            quantities += ("loss_stderr", "samples")
        out.append(ValueGroup(split, tuple(f"{split}_{q}" for q in quantities), split, quantities))
        for name, spec in metrics:
            out.append(ValueGroup(f"{split}_{name}", (f"{split}_{name}",), split, (name,), spec))
    return tuple(out)
MAX_RUNS = 200  # entries of the run history kept (an HDF5 attribute holds at most 64 kB)
_BN_FIELDS = ("bn_recalibrate", "bn_batch_size", "bn_samples")


def _num(v: float) -> str:
    """`v` in few digits where they are exact (``-1``, ``0.5``), else in full (``1.0000004``)."""
    short = f"{float(v):g}"
    return short if float(short) == float(v) else repr(float(v))


@dataclass(frozen=True)
class Axis:
    """One grid axis: `num` evenly spaced points from `min` to `max`, ends included."""

    min: float
    max: float
    num: int

    @classmethod
    def parse(cls, text: str) -> "Axis":
        """Parses ``MIN:MAX:NUM`` such as ``-1:1:51``; raises ValueError saying what was expected."""
        parts = str(text).split(":")
        if len(parts) != 3:
            raise ValueError(f"expected MIN:MAX:NUM such as -1:1:51, got {text!r}")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"MIN and MAX must be numbers in MIN:MAX:NUM, got {text!r}") from None
        try:
            num = int(parts[2])
        except ValueError:
            raise ValueError(f"NUM must be a whole number in MIN:MAX:NUM, got {text!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"MIN and MAX must be finite, got {text!r}")
        if num < 2:
            raise ValueError(f"NUM must be at least 2 in MIN:MAX:NUM, got {num} in {text!r}")
        if hi <= lo:
            raise ValueError(f"MAX must be greater than MIN in MIN:MAX:NUM, got {text!r}")
        return cls(lo, hi, num)

    def coordinates(self) -> np.ndarray:
        """``np.linspace(min, max, num)``, except that the point that is 0 in exact arithmetic is exactly 0
        (linspace misses it by a rounding error for some counts: -1:1:99 gives -1.1e-16), so the centre of a
        grid is the unperturbed model itself.

        Example:
            >>> float(Axis(-1, 1, 99).coordinates()[49]), float(np.linspace(-1, 1, 99)[49])
            (0.0, -1.1102230246251565e-16)
        """
        c = self.linspace()
        k = round(-self.min * (self.num - 1) / (self.max - self.min))
        exact_zero = 0 <= k < self.num and self.min * (self.num - 1 - k) + self.max * k == 0
        if exact_zero and abs(c[k]) <= 8 * np.finfo(float).eps * max(abs(self.min), abs(self.max)):
            c[k] = 0.0
        return c

    def linspace(self) -> np.ndarray:
        """Plain ``np.linspace(min, max, num)``: the coordinates of files made before the centre was exact."""
        return np.linspace(self.min, self.max, self.num)

    def __str__(self) -> str:
        """``-1:1:51``; an end that ``:g`` would round is written in full (``-1:1.0000004:5``), so the
        text parses back to the same coordinates."""
        return f"{_num(self.min)}:{_num(self.max)}:{self.num}"


@dataclass(frozen=True)
class Grid:
    """A 1D (y is None) or 2D grid of coordinates; points are numbered row-major over `shape`."""

    x: Axis
    y: Optional[Axis] = None

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.x.num,) if self.y is None else (self.y.num, self.x.num)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def index(self, flat: int) -> tuple[int, ...]:
        """Array index of point `flat`: (i,) in 1D, (j, i) in 2D (row j is y[j])."""
        return tuple(int(k) for k in np.unravel_index(flat, self.shape))

    def coords(self, flat: int) -> tuple[float, ...]:
        """Coordinates (a,) or (a, b) of point `flat`, as float64 from the linspace."""
        idx = self.index(flat)
        if self.y is None:
            return (float(self.x.coordinates()[idx[0]]),)
        return (float(self.x.coordinates()[idx[1]]), float(self.y.coordinates()[idx[0]]))


@dataclass(frozen=True)
class SurfaceJob:
    """What a surface file holds values of. Reopening it for a different job is refused.

    The grid is compared as exact float64 coordinates. BN recalibration is part of the job as the
    batches, their size and the samples they cover (`bn_fields`), because those decide the statistics;
    without recalibration the batch size only changes float rounding and is recorded per run instead.
    """

    grid: Grid
    directions_sha256: str
    dir_type: str
    model: str
    model_sha256: str
    dataset: str
    data_split: int = 1
    split_idx: int = 0
    raw_data: bool = False
    loss_name: str = "crossentropy"
    precision: str = "fp32"
    bn_recalibrate: int = 0
    bn_batch_size: int = 0
    bn_samples: int = 0
    eval_samples: int = 0  # a fixed subset of this many samples of each set (0: all), chosen by eval_seed
    eval_seed: int = 0
    hessian: str = ""  # eigenvalue maps: how the eigenvalues are computed (set, parameters, tolerance)
    # Estimates (--tolerance): each point stops once the loss's standard error is below tolerance x its mean, its
    # batches (of tolerance_batch_size) taken in the order tolerance_seed shuffles the set into. 0: exact.
    tolerance: float = 0.0
    tolerance_seed: int = 0
    tolerance_batch_size: int = 0
    layers: str = ""  # --layers: the directions keep only the tensors these globs name (JSON list; "": all)

    @staticmethod
    def bn_fields(batches: int, batch_size: int, n_train: int) -> dict:
        """The job's BN recalibration fields for `batches` batches of `batch_size` out of `n_train` samples.

        Example:
            >>> SurfaceJob.bn_fields(2, 128, 1397)
            {'bn_recalibrate': 2, 'bn_batch_size': 128, 'bn_samples': 256}
            >>> SurfaceJob.bn_fields(0, 1024, 1397)  # off: the batch size is no part of the job
            {'bn_recalibrate': 0, 'bn_batch_size': 0, 'bn_samples': 0}
        """
        if batches <= 0:
            return {"bn_recalibrate": 0, "bn_batch_size": 0, "bn_samples": 0}
        return {"bn_recalibrate": int(batches), "bn_batch_size": int(batch_size),
                "bn_samples": int(min(batches * batch_size, n_train))}

    def attrs(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "grid"}
        out["x"] = str(self.grid.x)
        out["y"] = "" if self.grid.y is None else str(self.grid.y)
        return out


@dataclass
class Provenance:
    """Facts about how the file was made that do not change its values."""

    dir_file: str = ""
    model_file: str = ""
    world_size: int = 1
    batch_size: int = 0
    device: str = "cpu"
    extra: dict = field(default_factory=dict)  # file attributes, written when the file is made
    run: dict = field(default_factory=dict)  # facts of this run, added to its entry of the ``runs`` history


def job_field_names() -> list[str]:
    return [f.name for f in fields(SurfaceJob)]
