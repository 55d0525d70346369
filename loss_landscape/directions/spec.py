"""What a set of directions is: `DirectionSpec` (how it was made) and `Directions` (the vectors).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from loss_landscape.params import ParamVector


NORMS = ("filter", "layer", "weight", "dfilter", "dlayer", "")
IGNORES = ("biasbn", "")
DIRECTION_FORMAT = "loss-landscape directions"
DIRECTION_FORMAT_VERSION = 1


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
