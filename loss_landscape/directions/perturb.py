"""`Perturber`: moves a model's weights (and BN states) to w0 + a x + b y in place, and back.
"""

from __future__ import annotations

from typing import Sequence

import torch

from loss_landscape.params import ParamVector
from loss_landscape.directions.files import check_fits
from loss_landscape.directions.spec import ADAMEQ, Directions


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
        self.names = [live.names[i] for i in keep]
        self.targets = [live[i] for i in keep]
        self.base = [live[i].detach().clone() for i in keep]
        dirs = [directions.x] if directions.y is None else [directions.x, directions.y]
        self.dirs = [[vec[i].to(device=live[i].device, dtype=live[i].dtype) for i in keep] for vec in dirs]
        # adameq surfaces lie on one line: grid point (a, b) is w0 + (a / sqrt(b)) * x (see adam_directions).
        self.adameq = directions.spec.kind == ADAMEQ and len(self.dirs) == 2
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
        if self.adameq:
            from loss_landscape.directions.adam import adameq_coords
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

    def moved_by_name(self) -> dict[str, list[torch.Tensor]]:
        """{name: [dx] or [dx, dy]} of the tensors a direction moves (not all zero), on the model's device."""
        out = {}
        for k, name in enumerate(self.names):
            ds = [d[k] for d in self.dirs]
            if any(bool(d.any()) for d in ds):
                out[name] = ds
        return out

    @torch.no_grad()
    def restore_(self) -> None:
        """Puts the centre model back."""
        for t, w0 in zip(self.targets, self.base):
            t.copy_(w0)
