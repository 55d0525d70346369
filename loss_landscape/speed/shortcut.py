"""Exact shortcuts: what the directions leave unmoved is computed once per batch instead of at every grid point.

- **Unmoved prefix.** An operation that depends on no moved tensor gives the same output at every point. The
  values the moved part of the network reads from it are computed once per batch and kept on the device
  (directions restricted to ``layer3``: the stem, layer1 and layer2 run once).
- **First moved layer.** A Linear or Conv (1d, 2d, 3d) call whose input is unmoved and whose only moved tensors are
  its own weight and bias is linear in them: f(u; w0 + a dx + b dy) = f(u; w0) + a f(u; dx) + b f(u; dy), each
  term with its bias part (the bias direction alone when the weight does not move; nothing when both are zero).
  The three outputs are kept, and a point pays one fused ``h0 + a hx + b hy`` for that layer (an MLP moved in
  every layer: its first layer becomes nearly free).

`Shortcut.build` traces the model (eval mode) with ``torch.fx`` and cuts the graph there: a prefix graph that runs
once per batch at build time (the split's transform applied, in the evaluation's precision, at the plain path's
batch boundaries), and the rest, which reads the kept values and the model's live tensors, so it follows the
`Perturber`; `Shortcut.set_point_` gives it the point's coordinates for the combinations. Values equal the plain
path's to float rounding of that one layer (the tests hold loss and accuracy to 1e-6 relative in float32).

`build` returns None where no exact shortcut gains anything or fits; `Shortcut.attempt` returns the shortcut or the
one-line reason (to log), and `why_not` the reason alone. Reasons: the model cannot be traced; a moved name is not
one of the model's tensors; nothing is skipped (the first moved operation reads the inputs and is no Linear/Conv);
the kept tensors would exceed `budget_bytes`; an in-place operation would write into a kept tensor or change it
before a moved operation reads it. Structured inputs (tuples, dicts) are handled as `batches.call_model` does.

It must be built with the model at the centre (f(u; w0) is computed from the live weights). Not covered: layers
called through ``F.linear``/``F.conv2d`` with attribute tensors (they move, and run, in the rest), and in-place
operations on views of kept values (the in-place check follows the graph's values, not their aliases).

Example:
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    >>> moved = {n: [torch.randn_like(p)] for n, p in net.named_parameters()}
    >>> split = DeviceSplit(torch.randn(20, 4), torch.randint(0, 3, (20,)))
    >>> cut = Shortcut.build(net, moved, split, batch_size=8, budget_bytes=2**20)
    >>> cut.kind, len(cut.split), cut.cached_bytes  # h0, hx: 20 rows of 8 floats each
    ('first-layer', 20, 1280)
    >>> cut.set_point_((0.5,))  # after the Perturber has moved `net` to 0.5
    >>> values = evaluate_values(cut.forward, cut.split, Criterion.of("crossentropy"), batch_size=cut.batch_size)
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from loss_landscape import batches as bt
from loss_landscape.evaluation import precision_context

__all__ = ["KINDS", "CachedSplit", "Shortcut"]

KINDS = ("prefix", "first-layer", "prefix+first-layer")
_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_INPLACE_FUNCTIONS = {operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv,
                      operator.ifloordiv, operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
                      operator.ilshift, operator.irshift, operator.imatmul}


# ----------------------------------------------------------------------------------------------------------
# What the shortcut hands to evaluate_values
# ----------------------------------------------------------------------------------------------------------

class CachedSplit:
    """The kept values of each batch with its targets, as `evaluate_values` iterates them.

    Each batch's inputs are a tuple: first an empty ``(rows, 0)`` tensor, so that ``batches.rows`` counts the
    batch's samples whatever is kept, then the kept tensors. It has no transform (the prefix applied it).
    """

    transform = None

    def __init__(self, batches: list[tuple[tuple, Any]], rows: int, batch_size: int, device: torch.device):
        self._batches, self._rows, self.batch_size, self._device = batches, rows, batch_size, device

    def __len__(self) -> int:
        return self._rows

    @property
    def device(self) -> torch.device:
        return self._device

    def batches(self, batch_size: int) -> Iterator[tuple[tuple, Any]]:
        """The kept batches in order; `batch_size` must be the one the shortcut was built with."""
        if batch_size != self.batch_size:
            raise ValueError(f"the shortcut kept batches of {self.batch_size} rows: expected batch_size="
                             f"{self.batch_size}, found {batch_size}")
        return iter(self._batches)


class _Combine(nn.Module):
    """h0 + c[i] * t_i over the layer's terms; `coords` is the list `Shortcut.set_point_` writes."""

    def __init__(self, coords: list, which: tuple[int, ...]):
        super().__init__()
        self._coords, self._which = coords, which

    def forward(self, h0: torch.Tensor, *terms: torch.Tensor) -> torch.Tensor:
        out = torch.add(h0, terms[0], alpha=self._coords[self._which[0]])
        for t, k in zip(terms[1:], self._which[1:]):
            out.add_(t, alpha=self._coords[k])
        return out


class _Extras(nn.Module):
    """The kept values that are not tensors (sizes, say), looked up by the batch's row tensor."""

    def __init__(self):
        super().__init__()
        self.by_batch: dict[int, tuple] = {}

    def forward(self, rows: torch.Tensor) -> tuple:
        try:
            return self.by_batch[id(rows)]
        except KeyError:
            raise ValueError("a batch that the shortcut did not keep: expected the batches of Shortcut.split, as "
                             "they are") from None


# ----------------------------------------------------------------------------------------------------------
# The graph: which operations move, where to cut
# ----------------------------------------------------------------------------------------------------------

def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _fetch(root: nn.Module, target: str) -> Any:
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _tensors_of(node: fx.Node, root: fx.GraphModule) -> list[torch.Tensor]:
    """The model tensors a node reads by itself: a leaf module's parameters and buffers, an attribute's tensor."""
    if node.op == "call_module":
        m = _fetch(root, node.target)
        return list(m.parameters()) + list(m.buffers())
    if node.op == "get_attr":
        obj = _fetch(root, node.target)
        if isinstance(obj, torch.Tensor):
            return [obj]
        if isinstance(obj, nn.Module):
            return list(obj.parameters()) + list(obj.buffers())
    return []


def _mutated(node: fx.Node, root: fx.GraphModule) -> Optional[fx.Node]:
    """The graph value an in-place operation writes into, or None."""
    first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    out = node.kwargs.get("out")
    if isinstance(out, fx.Node):
        return out
    if node.op == "call_method":
        name = str(node.target)
        return first if name.endswith("_") and not name.endswith("__") else None
    if node.op == "call_module":
        return first if getattr(_fetch(root, node.target), "inplace", False) is True else None
    if node.op == "call_function":
        if node.target in _INPLACE_FUNCTIONS:
            return first
        name = getattr(node.target, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            return first
        try:  # F.relu(x, inplace=True), F.dropout(x, 0.1, False, True), ...
            bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
            return first if bound.arguments.get("inplace") is True else None
        except (TypeError, ValueError):
            return None
    return None


def _is_linear_layer(m: nn.Module) -> bool:
    """A plain Linear/Conv whose forward is torch's own (a subclass may compute something else)."""
    return any(isinstance(m, c) and type(m).forward is c.forward for c in _LINEAR)


def _apply(layer: nn.Module, u: torch.Tensor, w: Optional[torch.Tensor], b: Optional[torch.Tensor],
           like: torch.Tensor) -> torch.Tensor:
    """The layer's output with weight `w` and bias `b` (a direction's parts); the bias alone as a broadcast view."""
    if w is None:
        shape = [1] * like.dim()
        shape[-1 if isinstance(layer, nn.Linear) else like.dim() - len(layer.kernel_size) - 1] = -1
        return b.to(like.dtype).reshape(shape).expand(like.shape)
    if isinstance(layer, nn.Linear):
        return F.linear(u, w, b)
    return layer._conv_forward(u, w, b)


def _nbytes(values: Sequence[Any], free: set[int]) -> int:
    """Bytes of the storages behind the tensors in `values`, each once, leaving out those in `free`."""
    seen: dict[int, int] = {}
    for v in values:
        for t in _flat_tensors(v):
            ptr = _storage(t)
            if ptr not in free and t.numel():
                seen[ptr] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _flat_tensors(v: Any) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return [v]
    if isinstance(v, dict):
        return [t for x in v.values() for t in _flat_tensors(x)]
    if isinstance(v, (tuple, list)):
        return [t for x in v for t in _flat_tensors(x)]
    return []


def _tensor_structure(v: Any) -> bool:
    """Whether `v` is a tensor or a tuple/list/dict of them only (what `batches.tensors` accepts)."""
    if isinstance(v, torch.Tensor):
        return True
    if isinstance(v, dict):
        return bool(v) and all(_tensor_structure(x) for x in v.values())
    if isinstance(v, (tuple, list)):
        return bool(v) and all(_tensor_structure(x) for x in v)
    return False


class _Plan:
    """The traced graph split at the first moved operations (no data looked at yet)."""

    def __init__(self, gm: fx.GraphModule, moved_storages: dict[int, list[Optional[torch.Tensor]]]):
        self.gm = gm
        self.nodes = list(gm.graph.nodes)
        self.moved: dict[fx.Node, bool] = {}
        for n in self.nodes:
            own = any(_storage(t) in moved_storages for t in _tensors_of(n, gm) if t.numel())
            self.moved[n] = own or any(self.moved[a] for a in n.all_input_nodes)
        # Moved Linear/Conv calls that read one unmoved value and move only through their weight and bias.
        self.linear: dict[fx.Node, tuple[nn.Module, list, list]] = {}
        for n in self.nodes:
            if n.op != "call_module" or not self.moved[n] or len(n.args) != 1 or n.kwargs:
                continue
            layer, u = _fetch(gm, n.target), n.args[0]
            if not _is_linear_layer(layer) or not isinstance(u, fx.Node) or self.moved[u]:
                continue
            own = {_storage(t): k for k, t in (("weight", layer.weight), ("bias", layer.bias)) if t is not None}
            if any(_storage(t) in moved_storages and _storage(t) not in own for t in _tensors_of(n, gm)):
                continue
            w = moved_storages.get(_storage(layer.weight), [])
            b = moved_storages.get(_storage(layer.bias), []) if layer.bias is not None else []
            self.linear[n] = (layer, w, b)
        rest_users = {n: [u for u in n.users if self.moved[u] and u not in self.linear]
                      for n in self.nodes}
        # Unmoved values the rest reads; attributes are read live by the rest instead of being kept.
        self.frontier = [n for n in self.nodes if not self.moved[n] and n.op not in ("get_attr", "output")
                         and rest_users[n]]
        self.rest_attrs = {n for n in self.nodes if n.op == "get_attr" and (self.moved[n] or rest_users[n])}
        # What runs once: operations with weights or buffers of their own, or reading attribute tensors.
        self.skips_weights = any(
            not self.moved[n] and n.op != "get_attr" and n.op != "output" and
            (bool(_tensors_of(n, gm)) or any(a.op == "get_attr" for a in n.all_input_nodes))
            for n in self.nodes)

    def refusal(self) -> str:
        """Why this cut cannot be used exactly, or ''."""
        if not any(self.moved[n] for n in self.nodes):
            return "no operation of the traced model reads a moved tensor"
        if not self.linear and not self.skips_weights:
            return ("the first moved operation reads the inputs (or only weightless operations come before it) and "
                    "is not a Linear or Conv layer: nothing to skip")
        order = {n: i for i, n in enumerate(self.nodes)}
        for p in self.nodes:
            t = _mutated(p, self.gm)
            if t is None or self.moved[t]:
                continue
            if self.moved[p]:
                return f"the moved operation {p.name} writes in place into {t.name}, a value the shortcut keeps"
            early = [u.name for u in t.users if self.moved[u] and order[u] < order[p]]
            if early:
                return (f"the operation {p.name} changes {t.name} in place after the moved {early[0]} read it: "
                        f"computed once, it would change what {early[0]} reads")
        return ""

    @property
    def kind(self) -> str:
        return "+".join(k for k, on in (("prefix", self.skips_weights), ("first-layer", bool(self.linear))) if on)

    def prefix(self) -> fx.GraphModule:
        """The unmoved operations, in the model's order; returns the frontier values, then the linear inputs."""
        g, env = fx.Graph(), {}
        for n in self.nodes:
            if not self.moved[n] and n.op != "output":
                env[n] = g.node_copy(n, lambda a: env[a])
        g.output(tuple(env[n] for n in self.frontier) + tuple(env[n.args[0]] for n in self.linear))
        return fx.GraphModule(self.gm, g)

    def rest(self, kept: list[bool], terms: list[tuple[int, ...]], coords: list,
             extras: _Extras) -> fx.GraphModule:
        """The moved operations, reading (rows, kept tensors..., each linear layer's h0 and terms...); the
        frontier values that are not tensors come from `extras`. `kept[i]`: frontier value i is a tensor slot."""
        g, env = fx.Graph(), {}
        rows = g.placeholder("rows")
        for i, n in enumerate(self.frontier):
            if kept[i]:
                env[n] = g.placeholder(f"kept_{i}")
        slots = [[g.placeholder(f"h_{j}")] + [g.placeholder(f"h_{j}_{d}") for d in which]
                 for j, which in enumerate(terms)]
        # A dict root: the rest holds the model's own modules and tensors (live), and none of the model's names.
        root: dict[str, Any] = {"_shortcut_extras": extras}
        if not all(kept):
            got = g.call_module("_shortcut_extras", (rows,))
            for i, n in enumerate(self.frontier):
                if not kept[i]:
                    env[n] = g.call_function(operator.getitem, (got, sum(1 for k in kept[:i] if not k)))
        for j, (n, which) in enumerate(zip(self.linear, terms)):
            root[f"_shortcut_combine_{j}"] = _Combine(coords, which)
            env[n] = g.call_module(f"_shortcut_combine_{j}", tuple(slots[j]))
        for n in self.nodes:
            if n in env:
                continue
            if n.op == "output":
                g.output(fx.node.map_arg(n.args[0], lambda a: env[a]))
            elif self.moved[n] or n in self.rest_attrs:
                if n.op in ("call_module", "get_attr"):
                    root[n.target] = _fetch(self.gm, n.target)
                env[n] = g.node_copy(n, lambda a: env[a])
        return fx.GraphModule(root, g, class_name="ShortcutRest")


# ----------------------------------------------------------------------------------------------------------
# The shortcut
# ----------------------------------------------------------------------------------------------------------

class Shortcut:
    """A model cut at its first moved operations, with the prefix's outputs (and first layers' terms) kept.

    Attributes:
        forward: the callable to evaluate (the graph after the cut, reading the model's live tensors).
        split: the kept batches (`CachedSplit`); evaluate it with `batch_size`.
        batch_size: the batch size it was built with (the plain path's, so the batches are the same).
        kind: ``prefix`` (unmoved layers with weights run once), ``first-layer`` (the first moved Linear/Conv
            layers' outputs are combinations of kept terms) or ``prefix+first-layer``.
        cached_bytes: bytes kept on the device (storages the split already holds are not counted).
        ndirs: 1 or 2 coordinates per point.
    """

    def __init__(self, forward: fx.GraphModule, split: CachedSplit, kind: str, cached_bytes: int, coords: list,
                 adameq: bool):
        self.forward, self.split, self.kind, self.cached_bytes = forward, split, kind, cached_bytes
        self.batch_size = split.batch_size
        self.ndirs = len(coords)
        self._coords, self._adameq = coords, adameq

    def set_point_(self, coords: Sequence[float]) -> None:
        """The grid point (a,) or (a, b), given after the `Perturber` has moved the model there. With ``adameq``
        the coordinates are mapped as the Perturber maps them (`adameq_coords`)."""
        if len(coords) != self.ndirs:
            raise ValueError(f"{len(coords)} coordinates for a shortcut of {self.ndirs} directions")
        if self._adameq:
            from loss_landscape.directions.adam import adameq_coords
            coords = adameq_coords(*coords)
        self._coords[:] = [float(c) for c in coords]

    @classmethod
    def build(cls, model: nn.Module, directions_by_name: dict[str, list[torch.Tensor]], split: Any, *,
              batch_size: int, budget_bytes: int, precision: str = "fp32",
              adameq: bool = False) -> Optional["Shortcut"]:
        """The shortcut of `model` over `split`, or None where there is none (`attempt` says why).

        Args:
            model: the model at the centre (put in eval mode).
            directions_by_name: {name: [dx] or [dx, dy]} of the moved tensors, named as in ``named_parameters()``
                or ``state_dict()``, on the model's device (`Perturber.moved_by_name`).
            split: a `DeviceSplit` (inputs in memory; its transform is applied before keeping).
            batch_size: the batch size of the evaluations (the kept batches are these).
            budget_bytes: the most the kept tensors may take.
            precision: ``fp32``, ``tf32`` or ``bf16``: the evaluations' (`precision_context`).
            adameq: the Perturber's ``adameq`` (coordinates mapped by `adameq_coords`).
        """
        made = cls.attempt(model, directions_by_name, split, batch_size=batch_size, budget_bytes=budget_bytes,
                           precision=precision, adameq=adameq)
        return made if isinstance(made, Shortcut) else None

    @classmethod
    def from_perturber(cls, model: nn.Module, perturber: Any, split: Any, *, batch_size: int, budget_bytes: int,
                       precision: str = "fp32") -> "Shortcut | str":
        """`attempt` with the moved tensors and the adameq mapping of `perturber` (a `Perturber` of `model`)."""
        return cls.attempt(model, perturber.moved_by_name(), split, batch_size=batch_size,
                           budget_bytes=budget_bytes, precision=precision, adameq=perturber.adameq)

    @classmethod
    def why_not(cls, model: nn.Module, directions_by_name: dict[str, list[torch.Tensor]], split: Any, *,
                batch_size: int, budget_bytes: int, precision: str = "fp32", adameq: bool = False) -> str:
        """Why `build` gives None, '' when it does not (it builds the shortcut again: use `attempt` for both)."""
        made = cls.attempt(model, directions_by_name, split, batch_size=batch_size, budget_bytes=budget_bytes,
                           precision=precision, adameq=adameq)
        return "" if isinstance(made, Shortcut) else made

    @classmethod
    def attempt(cls, model: nn.Module, directions_by_name: dict[str, list[torch.Tensor]], split: Any, *,
                batch_size: int, budget_bytes: int, precision: str = "fp32",
                adameq: bool = False) -> "Shortcut | str":
        """The shortcut (see `build`), or the one-line reason there is none.

        Raises:
            ValueError: a batch size below 1, or direction lists of different lengths (not 1 or 2).

        Example:
            >>> bn_first = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3))
            >>> moved = {n: [torch.ones_like(p)] for n, p in bn_first.named_parameters()}
            >>> Shortcut.attempt(bn_first, moved, DeviceSplit(torch.randn(8, 4), None), batch_size=4,
            ...                  budget_bytes=2**20)[:40]
            'the first moved operation reads the inpu'
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, found {batch_size}")
        counts = {len(d) for d in directions_by_name.values()}
        if len(counts) > 1 or counts - {1, 2}:
            raise ValueError(f"directions_by_name holds lists of {sorted(counts)} tensors: expected [dx] for all "
                             f"or [dx, dy] for all")
        if not hasattr(split, "inputs") or not callable(getattr(split, "batches", None)):
            return f"the data are a {type(split).__name__}, not held in memory (a DeviceSplit)"
        if len(split) == 0:
            return "the evaluation set is empty"
        ndirs = counts.pop() if counts else 1
        tensors = dict(model.named_parameters(remove_duplicate=False))
        tensors.update(dict(model.named_buffers(remove_duplicate=False)))
        moved: dict[int, list[Optional[torch.Tensor]]] = {}
        for name, dirs in directions_by_name.items():
            if name not in tensors:
                return f"{name!r} is not a parameter or buffer of the model"
            live = tensors[name]
            parts = [d.to(device=live.device, dtype=live.dtype) if bool(d.any()) else None for d in dirs]
            if any(p is not None for p in parts) and live.numel():
                moved[_storage(live)] = parts
        if not moved:
            return "no tensor moves"
        model.eval()
        try:
            plan = _Plan(fx.symbolic_trace(model), moved)
        except Exception as e:  # whatever the model's Python does under tracing
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return f"the model cannot be traced by torch.fx ({type(e).__name__}: {first[:120]})"
        why = plan.refusal()
        if why:
            return why
        try:
            return cls._keep(plan, split, ndirs, batch_size=batch_size, budget_bytes=budget_bytes,
                             precision=precision, adameq=adameq)
        except _OverBudget as e:
            return str(e)

    make = attempt  # the name `surface.compute.PointEvaluator` calls

    @classmethod
    @torch.no_grad()
    def _keep(cls, plan: _Plan, split: Any, ndirs: int, *, batch_size: int, budget_bytes: int, precision: str,
              adameq: bool) -> "Shortcut":
        """Runs the prefix over the split's batches and builds the rest around what it kept."""
        prefix = plan.prefix()
        free = {_storage(t) for t in bt.tensors(split.inputs)}  # views of the data cost nothing more
        nfront = len(plan.frontier)
        kept_flags: Optional[list[bool]] = None
        terms_which: list[tuple[int, ...]] = []
        extras = _Extras()
        batches, total = [], 0
        with precision_context(precision, split.device):
            for b, (x, y) in enumerate(split.batches(batch_size)):
                outs = bt.call_model(prefix, x)
                front, inputs = list(outs[:nfront]), list(outs[nfront:])
                if kept_flags is None:
                    kept_flags = [_tensor_structure(v) for v in front]
                    for layer, w, bias in plan.linear.values():
                        terms_which.append(tuple(d for d in range(ndirs)
                                                 if (w and w[d] is not None) or (bias and bias[d] is not None)))
                layer_terms = []
                for (layer, w, bias), which, u in zip(plan.linear.values(), terms_which, inputs):
                    h0 = layer(u)
                    layer_terms.append(h0)
                    layer_terms += [_apply(layer, u, w[d] if w else None, bias[d] if bias else None, h0)
                                    for d in which]
                rows = torch.empty((bt.rows(x), 0), device=split.device)
                kept = tuple(v for v, k in zip(front, kept_flags) if k)
                if not all(kept_flags):
                    extras.by_batch[id(rows)] = tuple(v for v, k in zip(front, kept_flags) if not k)
                batch_bytes = _nbytes(kept + tuple(layer_terms), free)
                total += batch_bytes
                # Scaled from the first batch to the whole split: refused before computing it all.
                guess = batch_bytes * len(split) // max(bt.rows(x), 1) if b == 0 else total
                if guess > budget_bytes or total > budget_bytes:
                    raise _OverBudget(f"the kept tensors exceed the memory budget (about "
                                      f"{max(guess, total) / 2**20:.1f} MiB for {len(split)} samples; budget "
                                      f"{budget_bytes / 2**20:.1f} MiB)")
                batches.append(((rows,) + kept + tuple(layer_terms), y))
        coords = [0.0] * ndirs
        rest = plan.rest(kept_flags, terms_which, coords, extras)
        return cls(rest, CachedSplit(batches, len(split), batch_size, split.device), plan.kind, total, coords,
                   adameq)


class _OverBudget(Exception):
    pass
