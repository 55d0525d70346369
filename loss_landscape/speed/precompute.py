"""Exact shortcuts: what the directions leave unmoved is computed once per batch, not at every grid point.

- **Unmoved prefix.** Every layer whose output depends on no moved tensor gives the same output at every point;
  the outputs the moved part reads are computed once per batch and kept on the device (``--layers layer3``: the
  stem, layer1 and layer2 run once).
- **First moved layer.** A Linear or Conv layer that reads only kept (unmoved) values and whose only moved tensors
  are its own weight and bias is linear in them: f(u; w0 + a dx + b dy) = f(u; w0) + a f(u; dx) + b f(u; dy)
  (each term with its bias part). The three terms are kept, and a point pays one linear combination for that layer
  (``--layers`` not given, an MLP: the first layer is nearly free).

`Shortcut.build` traces the model with ``torch.fx``, splits its graph at the first moved operations, runs the prefix
over the split's batches (the same batches, transform applied, in the same precision) and returns None when the
model cannot be traced, nothing would be skipped, the kept tensors would exceed `budget_bytes`, the inputs are not
one tensor, or a moved in-place operation would write into a kept tensor; `Shortcut.why_not` says which. The rest of
the graph reads the model's live (moved) tensors, so it follows the `Perturber`; `set_point_` gives the
coordinates for the linear combinations. Values equal the plain path to float rounding (the tests hold them to
1e-6 relative). It must be built with the model at the centre.

Example:
    >>> net = nn.Sequential(nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    >>> moved = {n: [torch.randn_like(p)] for n, p in net.named_parameters()}
    >>> split = DeviceSplit(torch.randn(20, 256), torch.randint(0, 3, (20,)))
    >>> cut = Shortcut.build(net, moved, split, batch_size=8, budget_bytes=2**20)
    >>> cut.kind, len(cut.split)
    ('first-layer', 20)
"""

from __future__ import annotations

import operator
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import fx, nn

from loss_landscape.evaluation import DeviceSplit, precision_context

__all__ = ["Shortcut"]

_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# A layer's three terms are kept only when each output costs at least this many multiply-adds (its fan-in): below,
# the combination (two passes over the output) costs as much as the layer (measured on 2 CPU cores, MLPs on 2,000
# samples: fan-in 128 0.84x, 256 1.43x, 1024 3.1x, 3072 5.6x).
MIN_FAN_IN = 256


class _Combine(nn.Module):
    """h0 + a*hx (+ b*hy), with the point's coordinates set by `Shortcut.set_point_`."""

    def __init__(self, holder: list):
        super().__init__()
        self._coords = holder  # shared list [a] or [a, b]

    def forward(self, h0: torch.Tensor, *terms: torch.Tensor) -> torch.Tensor:
        out = h0 + terms[0] * self._coords[0]
        for t, c in zip(terms[1:], self._coords[1:]):
            out = out + t * c
        return out


class CachedSplit:
    """The kept tensors of each batch with its targets: what `evaluate_values` iterates (at the build's batch size)."""

    def __init__(self, batches: list[tuple[tuple[torch.Tensor, ...], Any]], rows: int, batch_size: int,
                 device: torch.device):
        self._batches, self._rows, self.batch_size, self._device = batches, rows, batch_size, device

    def __len__(self) -> int:
        return self._rows

    @property
    def device(self) -> torch.device:
        return self._device

    def batches(self, batch_size: int) -> Iterator[tuple[tuple[torch.Tensor, ...], Any]]:
        if batch_size != self.batch_size:
            raise ValueError(f"the shortcut kept batches of {self.batch_size}, not {batch_size}")
        return iter(self._batches)


def _owned(module: nn.Module, target: str) -> list[str]:
    return [f"{target}.{n}" for n, _ in module.named_parameters()] + [f"{target}.{n}" for n, _ in module.named_buffers()]


class Shortcut:
    """A model split at its first moved operations, with the prefix's outputs kept per batch."""

    def __init__(self, rest: fx.GraphModule, split: CachedSplit, kind: str, cached_bytes: int, coords: list):
        self.forward, self.split, self.kind, self.cached_bytes = rest, split, kind, cached_bytes
        self._coords = coords
        self.batch_size = split.batch_size

    def set_point_(self, coords: Sequence[float]) -> None:
        """The grid point's (a,) or (a, b), after the `Perturber` has moved the model there."""
        self._coords[:] = [float(c) for c in coords]

    @classmethod
    def build(cls, model: nn.Module, moved: dict[str, list[torch.Tensor]], split: Any, *, batch_size: int,
              budget_bytes: int, precision: str = "fp32", min_fan_in: int = MIN_FAN_IN) -> Optional["Shortcut"]:
        """The shortcut of `model` for the tensors `moved` ({name: [dx] or [dx, dy]}) over `split` (a
        `DeviceSplit`), or None (see `why_not`). A Linear/Conv layer's terms are kept only when its fan-in (inputs
        per output) is at least `min_fan_in`; below, it is evaluated at each point like the rest."""
        made = cls.make(model, moved, split, batch_size=batch_size, budget_bytes=budget_bytes, precision=precision,
                        min_fan_in=min_fan_in)
        return made if isinstance(made, Shortcut) else None

    @classmethod
    def why_not(cls, model: nn.Module, moved: dict[str, list[torch.Tensor]], split: Any, *, batch_size: int,
                budget_bytes: int, precision: str = "fp32", min_fan_in: int = MIN_FAN_IN) -> str:
        """Why `build` gives None ("" when it does not)."""
        made = cls.make(model, moved, split, batch_size=batch_size, budget_bytes=budget_bytes, precision=precision,
                        min_fan_in=min_fan_in)
        return "" if isinstance(made, Shortcut) else made

    @classmethod
    def make(cls, model: nn.Module, moved: dict[str, list[torch.Tensor]], split: Any, *, batch_size: int,
             budget_bytes: int, precision: str = "fp32", min_fan_in: int = MIN_FAN_IN) -> "Shortcut | str":
        """The shortcut, or the one-line reason there is none."""
        if not isinstance(split, DeviceSplit) or not isinstance(split.inputs, torch.Tensor):
            return "the inputs are not one tensor held in memory"
        if not moved:
            return "no tensor moves"
        try:
            gm = fx.symbolic_trace(model)
        except Exception as e:
            return f"the model cannot be traced by torch.fx ({type(e).__name__})"
        modules = dict(gm.named_modules())
        nodes = list(gm.graph.nodes)
        is_moved: dict[fx.Node, bool] = {}
        for node in nodes:
            inputs_moved = any(is_moved.get(a, False) for a in node.all_input_nodes)
            own = False
            if node.op == "get_attr":
                own = node.target in moved
            elif node.op == "call_module":
                own = any(n in moved for n in _owned(modules[node.target], node.target))
            is_moved[node] = inputs_moved or own
        users_moved = {n: [u for u in n.users if is_moved[u]] for n in nodes}
        # The first moved layers that are linear in their own moved tensors and read only unmoved values.
        linear = {}
        for node in nodes:
            if node.op != "call_module" or not is_moved[node] or len(node.args) != 1 or node.kwargs:
                continue
            layer = modules[node.target]
            arg = node.args[0]
            if not isinstance(layer, _LINEAR) or not isinstance(arg, fx.Node) or is_moved[arg] \
                    or layer.weight[0].numel() < min_fan_in:
                continue
            names = _owned(layer, node.target)
            if all(n in (f"{node.target}.weight", f"{node.target}.bias") for n in names if n in moved):
                linear[node] = layer
        frontier = [n for n in nodes if not is_moved[n] and n.op not in ("output", "get_attr") and users_moved[n]
                    and not all(u in linear for u in users_moved[n])]
        skipped = any(n.op == "call_module" and not is_moved[n] and any(True for _ in modules[n.target].parameters())
                      for n in nodes)  # layers with weights that now run once
        if not linear and not skipped:
            return ("no layer with weights is left unmoved before the moved ones, and the first moved one is no "
                    f"Linear or Conv layer with a fan-in of {min_fan_in} or more: nothing to skip")
        for n in nodes:  # an in-place method of a kept value would change it for the next point
            if is_moved[n] and n.op in ("call_method", "call_function") and n.args and n.args[0] in frontier:
                name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
                if name.endswith("_") and not name.endswith("__") or n.target in (operator.iadd, operator.imul):
                    return f"the moved operation {n.name} works in place on a kept tensor"
        if any(n.op == "placeholder" for n in frontier) and len([n for n in nodes if n.op == "placeholder"]) > 1:
            return "the model takes several inputs"
        ndirs = len(next(iter(moved.values())))
        coords: list = [0.0] * ndirs

        # The prefix: one graph that returns the kept values and each linear layer's terms.
        pre = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        keep_nodes = [n for n in nodes if not is_moved[n] and n.op != "output"]
        for n in keep_nodes:
            env[n] = pre.node_copy(n, lambda a: env[a])
        outs = [env[n] for n in frontier]
        terms_of = {}
        for k, (node, layer) in enumerate(linear.items()):
            u = env[node.args[0]]
            base = pre.call_module(node.target, (u,))
            terms = [base]
            for d in range(ndirs):
                w = moved.get(f"{node.target}.weight")
                b = moved.get(f"{node.target}.bias")
                name = f"_term{k}_{d}"
                setattr(gm, name, _Term(layer, None if w is None else w[d], None if b is None else b[d]))
                terms.append(pre.call_module(name, (u,)))
            terms_of[node] = (len(outs), len(terms))
            outs += terms
        pre.output(tuple(outs))
        prefix = fx.GraphModule(gm, pre)

        # The rest: the kept values come in as inputs.
        rest = fx.Graph()
        renv: dict[fx.Node, fx.Node] = {}
        slots = [rest.placeholder(f"kept_{i}") for i in range(len(outs))]
        for i, n in enumerate(frontier):
            renv[n] = slots[i]
        holder = coords
        setattr(gm, "_combine", _Combine(holder))
        for n in nodes:
            if not is_moved[n] and n.op != "output" and not (n.op == "get_attr" and users_moved[n]):
                continue
            if n in linear:
                start, count = terms_of[n]
                renv[n] = rest.call_module("_combine", tuple(slots[start:start + count]))
                continue
            renv[n] = rest.node_copy(n, lambda a: renv[a])
        rest_gm = fx.GraphModule(gm, rest)

        batches, total = [], 0
        with torch.no_grad(), precision_context(precision, split.device):
            for x, y in split.batches(batch_size):
                kept = tuple(t.detach() for t in prefix(x))
                total += sum(t.numel() * t.element_size() for t in kept if isinstance(t, torch.Tensor))
                if total > budget_bytes:
                    return (f"the kept tensors exceed the memory budget ({total / 2**20:.0f} MiB so far, budget "
                            f"{budget_bytes / 2**20:.0f} MiB)")
                batches.append((kept, y))
        kind = "+".join(k for k, on in (("prefix", skipped),
                                        ("first-layer", bool(linear))) if on)
        return cls(rest_gm, CachedSplit(batches, len(split), batch_size, split.device), kind, total, holder)


class _Term(nn.Module):
    """A linear layer's term along one direction: the layer applied with the direction's weight and bias parts."""

    def __init__(self, layer: nn.Module, dw: Optional[torch.Tensor], db: Optional[torch.Tensor]):
        super().__init__()
        self._layer = (layer,)
        self.dw = torch.zeros_like(layer.weight) if dw is None else dw.detach()
        self.db = None if db is None else db.detach()

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        layer = self._layer[0]
        if isinstance(layer, nn.Linear):
            return torch.nn.functional.linear(u, self.dw, self.db)
        return layer._conv_forward(u, self.dw, self.db)
