"""Several grid points per forward pass: the same batch through P weight sets at once (`torch.func.vmap`).

A small model leaves a device idle at one point per pass; stacking the weights of P points, (P, ...) per moved
tensor, and mapping ``functional_call(model, (weights, shared), x)`` over them with `torch.func.vmap` makes one
pass of P times the work. Each point's weights are built with the `Perturber`'s own operations (``t = dx*a;
s = dy*b; t += s; t += w0``), so they are the very weights the point-by-point path evaluates; the outputs of
point i, ``outputs[i]``, go to `Criterion.batch_sums` and are summed in float64 as in `evaluate_values`, with
one synchronization per chunk of points. Batched matrix products may round differently from single ones (a
convolution over stacked weights runs as a grouped convolution), so values agree to float32 rounding of the
forward pass (relative 1e-6 or so), not always to the bit.

Moved tensors are stacked (``in_dims`` 0): the parameters, and for ``dir_type`` states the floating buffers
(BatchNorm running statistics, evaluated in eval mode); every other tensor of the model (integer buffers, BN
statistics under ``weights``) is shared by all points (``in_dims`` None). The model's own tensors are never
written, so the model stays wherever a `Perturber` left it.

Memory: P copies of the moved tensors (`weight_bytes`) plus P times the activations of one batch; the caller
chooses P (``--points_per_pass``) and may lower the batch size to keep the activations the same.

Models vmap cannot run (data-dependent control flow such as ``if x.sum() > 0``, in-place operations on the
inputs, ``.item()``, random numbers) raise `EvaluationError` naming the model and suggesting
``--points_per_pass 1``; `MultiPoint.supports` probes a model once beforehand. BN recalibration per point does
not combine with this (the statistics would be re-estimated in training mode at each point).

Example:
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> w = ParamVector.from_model(net, "weights")
    >>> d = create_random_direction(w, generator=direction_generator(0, 0))
    >>> p = Perturber(net, Directions(d, None, DirectionSpec()), "weights")
    >>> mp = MultiPoint.from_perturber(net, p, "weights", points_per_pass=4)
    >>> split = DeviceSplit(torch.randn(20, 4), torch.randint(0, 3, (20,)))
    >>> values = mp.evaluate([(-0.5,), (0.0,), (0.5,)], split, Criterion.of("crossentropy"), batch_size=8)
    >>> len(values), sorted(values[0])
    (3, ['acc', 'loss'])
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from loss_landscape import batches as bt
from loss_landscape.directions.perturb import Perturber
from loss_landscape.errors import EvaluationError
from loss_landscape.evaluation import Criterion, precision_context
from loss_landscape.params import ParamVector

__all__ = ["MultiPoint"]


class MultiPoint:
    """Evaluates grid points P at a time by mapping the model over stacked weights.

    Args:
        model: the model; only its structure and its unmoved tensors are used (its moved tensors are replaced by
            the points' weights in the forward pass, never written).
        targets_by_name: w0, the centre value of every moved tensor by its name in the model
            (``named_parameters``/``named_buffers``/``state_dict`` names): the floating tensors of
            `ParamVector.from_model(model, dir_type)`.
        dirs_by_name: the directions' tensor for each moved name, ``[dx]`` or ``[dx, dy]``; cast to w0's device
            and dtype, as the `Perturber` does.
        points_per_pass: P, the most points of one forward pass.
        coords_map: grid coordinates -> the coordinates the weights are built at (adameq surfaces,
            `directions.adam.adameq_coords`); None: as given.

    Example:
        >>> net = nn.Linear(4, 3)
        >>> w0 = {n: t.detach().clone() for n, t in net.named_parameters()}
        >>> mp = MultiPoint(net, w0, {n: [torch.ones_like(t)] for n, t in w0.items()}, points_per_pass=2)
        >>> mp.weights_at([(1.0,)])["bias"].shape
        torch.Size([1, 3])
    """

    def __init__(self, model: nn.Module, targets_by_name: Mapping[str, torch.Tensor],
                 dirs_by_name: Mapping[str, Sequence[torch.Tensor]], *, points_per_pass: int,
                 coords_map: Optional[Callable[..., Sequence[float]]] = None):
        if not isinstance(points_per_pass, int) or points_per_pass < 1:
            raise EvaluationError(f"points_per_pass must be an integer >= 1, got {points_per_pass!r}")
        self.model = model
        self.points_per_pass = points_per_pass
        self._coords_map = coords_map
        known = dict(model.named_parameters(remove_duplicate=False))
        known.update(model.named_buffers(remove_duplicate=False))
        known.update({k: v for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, torch.Tensor)})
        if set(dirs_by_name) != set(targets_by_name):
            odd = sorted(set(dirs_by_name) ^ set(targets_by_name))
            raise EvaluationError(f"directions and centre name different tensors: {', '.join(odd[:5])}")
        self.names = list(targets_by_name)
        self.base: dict[str, torch.Tensor] = {}
        self.dirs: dict[str, list[torch.Tensor]] = {}
        ndirs = {len(d) for d in dirs_by_name.values()}
        if len(ndirs) > 1 or not ndirs <= {1, 2}:
            raise EvaluationError(f"expected one or two direction tensors per moved tensor, found "
                                  f"{sorted(ndirs)}")
        self.ndim = ndirs.pop() if ndirs else 1
        for name in self.names:
            if name not in known:
                raise EvaluationError(f"moved tensor {name!r} is not a parameter or buffer of "
                                      f"{type(model).__name__}")
            w0 = targets_by_name[name].detach()
            if w0.shape != known[name].shape or not w0.is_floating_point():
                raise EvaluationError(f"centre of {name}: floating {tuple(known[name].shape)} expected, found "
                                      f"{str(w0.dtype).replace('torch.', '')} {tuple(w0.shape)}")
            dirs = [d.detach().to(device=w0.device, dtype=w0.dtype) for d in dirs_by_name[name]]
            if any(d.shape != w0.shape for d in dirs):
                raise EvaluationError(f"direction of {name} has shape {tuple(dirs[0].shape)}, the tensor "
                                      f"{tuple(w0.shape)}")
            self.base[name], self.dirs[name] = w0, dirs
        self._moved = set(self.names)
        # Tensors of the model that share a moved tensor's storage (tied weights) are not shared as they are.
        self._moved_keys = {_storage_key(known[n]) for n in self.names}
        # Stacked weights, allocated once: (P, ...) per moved tensor; a partial chunk uses the first rows.
        self._stacked = {n: torch.empty((points_per_pass,) + tuple(w.shape), device=w.device, dtype=w.dtype)
                         for n, w in self.base.items()}
        self._scratch = {n: torch.empty_like(w) for n, w in self.base.items()} if self.ndim == 2 else {}
        self._mapped = vmap(self._forward, in_dims=(0, None, None))

    @classmethod
    def from_perturber(cls, model: nn.Module, perturber: Perturber, dir_type: str, *,
                       points_per_pass: int) -> "MultiPoint":
        """The points a `Perturber` over `model` would set: its centre (``perturber.base``), its directions and,
        for adameq surfaces, its coordinate map.

        The names come from `ParamVector.from_model(model, dir_type)` (floating tensors, the `Perturber`'s
        order); `EvaluationError` if its tensors are not the `Perturber`'s. Names that share storage (tied
        weights in a state dict) are moved once, with the last one's direction, as the `Perturber`'s
        in-place writes leave them.

        Example:
            >>> net = nn.Linear(4, 3)
            >>> d = create_random_direction(ParamVector.from_model(net, "weights"), generator=direction_generator(0, 0))
            >>> p = Perturber(net, Directions(d, None, DirectionSpec()), "weights")
            >>> MultiPoint.from_perturber(net, p, "weights", points_per_pass=4).names
            ['weight', 'bias']
        """
        live = ParamVector.from_model(model, dir_type)
        keep = live.floating()
        if len(keep) != len(perturber.targets) or any(
                live[i].data_ptr() != t.data_ptr() or live[i].shape != t.shape
                for i, t in zip(keep, perturber.targets)):
            raise EvaluationError(f"the Perturber was not made over this {type(model).__name__} with dir_type "
                                  f"{dir_type!r} (its tensors are not the model's)")
        last: dict[tuple, int] = {}
        for j, i in enumerate(keep):  # the Perturber writes in order: the last alias of a storage wins
            last[_storage_key(live[i])] = j
        chosen = sorted(last.values())
        names = [live.names[keep[j]] for j in chosen]
        targets = {n: perturber.base[j] for n, j in zip(names, chosen)}
        dirs = {n: [vec[j] for vec in perturber.dirs] for n, j in zip(names, chosen)}
        coords_map = None
        if perturber.adameq:
            from loss_landscape.directions.adam import adameq_coords
            coords_map = adameq_coords
        return cls(model, targets, dirs, points_per_pass=points_per_pass, coords_map=coords_map)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the P stacked weight copies (and the 2D scratch), beside P times a batch's activations."""
        return sum(t.numel() * t.element_size() for d in (self._stacked, self._scratch) for t in d.values())

    # ------------------------------------------------------------------------------------------------------
    # Weights of the points
    # ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def weights_at(self, coords_list: Sequence[Sequence[float]]) -> dict[str, torch.Tensor]:
        """{name: (n, ...)} the moved tensors at n <= P points, with the `Perturber`'s operations; views of the
        reused buffers (the next call overwrites them)."""
        n = len(coords_list)
        if not 1 <= n <= self.points_per_pass:
            raise EvaluationError(f"{n} points for a pass of at most {self.points_per_pass}")
        for k, coords in enumerate(coords_list):
            if len(coords) != self.ndim:
                raise EvaluationError(f"point {tuple(coords)} has {len(coords)} coordinates for {self.ndim} "
                                      f"direction(s)")
            if self._coords_map is not None and len(coords) == 2:
                coords = self._coords_map(*coords)
            for name in self.names:
                t, w0, dirs = self._stacked[name][k], self.base[name], self.dirs[name]
                if len(coords) == 1:
                    torch.mul(dirs[0], float(coords[0]), out=t)
                    t.add_(w0)
                else:
                    s = self._scratch[name]
                    torch.mul(dirs[1], float(coords[1]), out=s)
                    torch.mul(dirs[0], float(coords[0]), out=t)
                    t.add_(s)
                    t.add_(w0)
        return {name: buf[:n] for name, buf in self._stacked.items()}

    def _shared(self) -> dict[str, torch.Tensor]:
        """The model's unmoved tensors, the same for every point."""
        out = {n: p.detach() for n, p in self.model.named_parameters()}
        out.update(self.model.named_buffers())
        return {n: t for n, t in out.items() if n not in self._moved and _storage_key(t) not in self._moved_keys}

    def _forward(self, weights: dict, shared: dict, x: Any) -> Any:
        return bt.call_model(lambda *a, **k: functional_call(self.model, (weights, shared), a, k), x)

    def _outputs(self, weights: dict, shared: dict, x: Any, n: int) -> list[Any]:
        """Each point's outputs for batch `x`; vmap's failures become `EvaluationError` when the plain model runs."""
        try:
            out = self._mapped(weights, shared, x)
        except torch.OutOfMemoryError as e:
            raise EvaluationError(f"out of memory evaluating {n} points of {type(self.model).__name__} in one pass "
                                  f"on a batch of {bt.rows(x)} (each point holds its weights and activations): "
                                  f"lower --points_per_pass or --batch_size") from e
        except Exception as e:
            bt.call_model(self.model, x)  # a model that fails by itself fails with its own error
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise EvaluationError(f"{type(self.model).__name__} cannot evaluate several points in one pass with "
                                  f"torch.func.vmap ({type(e).__name__}: {first[:300]}): run with "
                                  f"--points_per_pass 1") from e
        return [pytree.tree_map(lambda t, i=i: t[i].contiguous() if isinstance(t, torch.Tensor) else t, out)
                for i in range(n)]

    # ------------------------------------------------------------------------------------------------------
    # Evaluating
    # ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, coords_list: Sequence[Sequence[float]], data: Any, criterion: Criterion, *, batch_size: int,
                 precision: str = "fp32") -> list[dict[str, float]]:
        """{quantity: value} at each point of `coords_list`, as `evaluate_values` gives for the model moved
        there: P points per pass over every batch of `data` (a `DeviceSplit` or a streaming split), the last
        chunk of fewer.

        Example:
            >>> mp.evaluate([(0.0, 0.0), (0.5, -1.0)], split, Criterion.of("crossentropy", ["top5"]),
            ...             batch_size=128)  # doctest: +SKIP
            [{'loss': 2.30..., 'acc': 9.8..., 'top5': 50.1...}, {...}]
        """
        if batch_size < 1:
            raise EvaluationError(f"batch size must be >= 1, got {batch_size}")
        if len(data) == 0:
            raise EvaluationError("the evaluation set is empty")
        self.model.eval()
        results: list[dict[str, float]] = []
        P = self.points_per_pass
        for start in range(0, len(coords_list), P):
            chunk = list(coords_list[start:start + P])
            results += self._evaluate_chunk(chunk, data, criterion, batch_size, precision)
        return results

    def _evaluate_chunk(self, chunk: list, data: Any, criterion: Criterion, batch_size: int,
                        precision: str) -> list[dict[str, float]]:
        n = len(chunk)
        weights = self.weights_at(chunk)
        shared = self._shared()
        totals: list[dict[str, list[torch.Tensor]]] = [{} for _ in range(n)]
        with precision_context(precision, data.device):
            for x, y in data.batches(batch_size):
                rows = bt.rows(x)
                for k, out in enumerate(self._outputs(weights, shared, x, n)):
                    for q, (s, w) in criterion.batch_sums(out, y, rows).items():
                        if q in totals[k]:
                            totals[k][q][0] += s
                            totals[k][q][1] += w
                        else:
                            totals[k][q] = [s.clone(), w.clone()]
        # One synchronization per chunk of points, not per batch or point.
        flat = torch.stack([t for tot in totals for pair in tot.values() for t in pair]).tolist()
        out, i = [], 0
        for tot in totals:
            sums = {}
            for q in tot:
                sums[q] = (flat[i], flat[i + 1])
                i += 2
            out.append(criterion.finish(sums))
        return out

    # ------------------------------------------------------------------------------------------------------
    # Probing
    # ------------------------------------------------------------------------------------------------------

    @classmethod
    @torch.no_grad()
    def supports(cls, model: nn.Module, example_input: Any, *, dir_type: str = "weights",
                 rtol: float = 1e-4) -> tuple[bool, str]:
        """(True, "") if `model` evaluates two points in one pass on `example_input` (a batch: tensor, tuple or
        dict) as the plain model does at each, else (False, why).

        The points are the model's current weights and those scaled by 0.9 (the floating tensors of
        `ParamVector.from_model(model, dir_type)`); the second is checked by writing it into the model for one
        plain forward and putting the weights back, bit for bit. Outputs must agree to `rtol` of their largest
        magnitude; a model that reads copies of its weights (cached at construction, say) fails here.

        Example:
            >>> MultiPoint.supports(nn.Linear(4, 3), torch.randn(5, 4))
            (True, '')
        """
        name = type(model).__name__
        was_training = model.training
        model.eval()
        live = ParamVector.from_model(model, dir_type)
        moved = [(live.names[i], live[i]) for i in live.floating()]
        seen, uniq = set(), []
        for n, t in moved:
            key = _storage_key(t)
            if key not in seen:
                seen.add(key)
                uniq.append((n, t))
        centre = {n: t.detach().clone() for n, t in uniq}
        try:
            try:
                plain0 = bt.call_model(model, example_input)
            except Exception as e:
                return False, f"the plain {name} fails on the example input: {type(e).__name__}: {e}"
            mp = cls(model, centre, {n: [t] for n, t in centre.items()}, points_per_pass=2)
            weights = mp.weights_at([(0.0,), (-0.1,)])
            try:
                outs = mp._outputs(weights, mp._shared(), example_input, 2)
            except EvaluationError as e:
                return False, str(e)
            saved = [t.detach().clone() for _, t in uniq]
            try:
                for n, t in uniq:
                    t.detach().copy_(weights[n][1])
                plain1 = bt.call_model(model, example_input)
            finally:
                for (_, t), s in zip(uniq, saved):
                    t.detach().copy_(s)
            for k, (got, want) in enumerate(((outs[0], plain0), (outs[1], plain1))):
                why = _differ(got, want, rtol)
                if why:
                    return False, (f"{name} gives other outputs at point {k} of a batched pass than alone ({why}): "
                                   f"does it read copies of its weights? run with --points_per_pass 1")
            return True, ""
        finally:
            model.train(was_training)


def _storage_key(t: torch.Tensor) -> tuple:
    """Equal for two names of one tensor (tied weights); empty tensors are never tied."""
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride())) if t.numel() else (id(t),)


def _differ(got: Any, want: Any, rtol: float) -> str:
    """Why two output structures differ beyond `rtol` of the reference's largest magnitude; "" if they do not."""
    g_leaves, g_spec = pytree.tree_flatten(got)
    w_leaves, w_spec = pytree.tree_flatten(want)
    if g_spec != w_spec:
        return f"structure {g_spec} versus {w_spec}"
    for g, w in zip(g_leaves, w_leaves):
        if not isinstance(w, torch.Tensor):
            continue
        if not isinstance(g, torch.Tensor) or g.shape != w.shape:
            return f"shape {tuple(getattr(g, 'shape', ()))} versus {tuple(w.shape)}"
        if w.is_floating_point():
            scale = float(w.abs().max()) if w.numel() else 0.0
            err = float((g.double() - w.double()).abs().max()) if w.numel() else 0.0
            if not err <= rtol * max(scale, 1e-12):
                return f"largest difference {err:.3g} for values up to {scale:.3g}"
        elif not torch.equal(g, w):
            return "integer outputs differ"
    return ""
