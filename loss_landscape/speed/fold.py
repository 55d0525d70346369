"""A model's eval-mode forward with BatchNorm folded into the layer before it, refreshed at every grid point.

In eval mode ``bn(conv(x))`` is one affine map per output channel after the convolution, so it equals a
convolution with W' = W * s and b' = (b - mean) * s + beta, where s = gamma / sqrt(var + eps) (gamma = 1,
beta = 0 without affine). At a grid point the `Perturber` has just written the weights and BN statistics into
the model, so `refresh_` recomputes W', b' from those live tensors (O(parameters), into preallocated buffers)
and the forward pass skips every folded BN's full read and write of its activations.

`FoldedForward.build` traces the model once with ``torch.fx`` and replaces each Conv1d/2d/3d or Linear -> BN pair
whose layer output feeds only that BN. With ``inplace`` (the default) it then makes ReLUs and residual additions
whose input is a fresh intermediate with no other user write into it (``relu_``, ``add_``, and a residual
``relu(a + b)`` as one pass, ``aten._add_relu_`` on CPUs): on CPUs each new activation tensor costs page faults
that cost as much as the elementwise pass itself. Both changes are exact: the same operations on the same values,
to float rounding for the fold and bit for bit for the in-place ops.

The traced module shares every other submodule with the model (the model is not changed), so it follows the
model's in-place moves; W' and b' follow them on `refresh_`. It is an eval-mode forward: the folded BNs use
their running statistics whatever the model's mode. A model that cannot be traced (data-dependent control flow)
or has no foldable pair gives None.

Example:
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> folded = FoldedForward.build(net)
    >>> folded.pairs, folded.inplace_ops
    (1, 1)
    >>> x = torch.randn(2, 3, 8, 8)
    >>> with torch.no_grad():
    ...     _ = net[0].weight.mul_(1.1)       # a Perturber's move, in place
    ...     folded.refresh_()
    ...     torch.allclose(folded(x), net(x), atol=1e-5)
    True
"""

from __future__ import annotations

import operator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FoldedForward"]

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class _Folded(nn.Module):
    """A convolution or linear layer with the eval-mode BN after it folded in; W', b' are preallocated buffers."""

    def __init__(self, layer: nn.Module, bn: _BatchNorm):
        super().__init__()
        self._src = (layer, bn)  # a tuple, so they are not registered as submodules: they stay the model's
        self.register_buffer("weight", torch.empty_like(layer.weight))  # keeps a channels_last layout
        like = {"device": layer.weight.device, "dtype": layer.weight.dtype}
        self.register_buffer("bias", torch.empty(bn.num_features, **like))
        self.register_buffer("scale", torch.empty(bn.num_features, **like))

    @torch.no_grad()
    def refresh_(self) -> None:
        layer, bn = self._src
        torch.add(bn.running_var, bn.eps, out=self.scale)
        self.scale.rsqrt_()
        if bn.weight is not None:
            self.scale.mul_(bn.weight)
        torch.mul(layer.weight, self.scale.view((-1,) + (1,) * (layer.weight.dim() - 1)), out=self.weight)
        if layer.bias is not None:
            torch.sub(layer.bias, bn.running_mean, out=self.bias)
        else:
            torch.neg(bn.running_mean, out=self.bias)
        self.bias.mul_(self.scale)
        if bn.bias is not None:
            self.bias.add_(bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer, bn = self._src
        if isinstance(layer, nn.Linear):
            if x.dim() != 2:  # BatchNorm1d of (N, L, C) normalizes L, not the Linear's features: no fold
                return F.batch_norm(layer(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                                    bn.eps)
            return F.linear(x, self.weight, self.bias)
        return layer._conv_forward(x, self.weight, self.bias)


def _fold_target(node: fx.Node, modules: dict[str, nn.Module]) -> Optional[fx.Node]:
    """The layer node that BN call `node` can be folded into, or None."""
    if node.op != "call_module" or not isinstance(modules.get(node.target), _BatchNorm):
        return None
    bn = modules[node.target]
    if not bn.track_running_stats or bn.running_var is None or len(node.args) != 1 or node.kwargs:
        return None  # batch statistics even in eval mode: nothing fixed to fold
    prev = node.args[0]
    if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
        return None  # the layer's output is also used elsewhere, unnormalized
    layer = modules.get(prev.target)
    if not isinstance(layer, _FOLDABLE) or _hooked(layer) or _hooked(bn):
        return None
    if layer.weight.shape[0] != bn.num_features or isinstance(layer, nn.Linear) != isinstance(bn, nn.BatchNorm1d):
        return None
    if layer.weight.dtype != bn.running_var.dtype or layer.weight.device != bn.running_var.device:
        return None
    return prev


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


# -- in-place elementwise ops ------------------------------------------------------------------------------------

def _add_into(a: torch.Tensor, b: Any) -> torch.Tensor:
    """``a + b`` written into `a` (a fresh tensor nobody else reads) when the sum has a's shape and dtype."""
    if isinstance(b, torch.Tensor):
        if torch.broadcast_shapes(a.shape, b.shape) != a.shape or torch.result_type(a, b) != a.dtype:
            return a + b
    elif torch.result_type(a, b) != a.dtype:
        return a + b
    return a.add_(b)


def _add_relu_into(a: torch.Tensor, b: Any) -> torch.Tensor:
    """``relu(a + b)`` written into `a` (fresh, read by nobody else): one pass over the memory on CPUs."""
    if not isinstance(b, torch.Tensor) or torch.broadcast_shapes(a.shape, b.shape) != a.shape \
            or torch.result_type(a, b) != a.dtype:
        return torch.relu(a + b)
    if a.device.type == "cpu" and a.is_floating_point() and not torch.compiler.is_compiling():
        return torch.ops.aten._add_relu_(a, b)
    return a.add_(b).relu_()  # inductor fuses these itself; CUDA has no _add_relu_


_RELU_FUNCTIONS = (torch.relu, F.relu)
_ADD_FUNCTIONS = (operator.add, torch.add)
_FRESH_MODULES = (_Folded, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, _BatchNorm)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        return len(node.args) == 1 and not node.kwargs.get("inplace", False) and set(node.kwargs) <= {"inplace"}
    if node.op == "call_method" and node.target == "relu":
        return len(node.args) == 1 and not node.kwargs
    if node.op == "call_module":
        m = modules.get(node.target)
        return isinstance(m, nn.ReLU) and not m.inplace and not _hooked(m) and len(node.args) == 1
    return False


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
        return len(node.args) == 2 and not node.kwargs
    return node.op == "call_method" and node.target == "add" and len(node.args) == 2 and not node.kwargs


def _make_inplace(gm: fx.GraphModule) -> int:
    """Rewrites ReLUs and additions whose (first or second) input is a fresh tensor read by nothing else into
    in-place ops; returns how many. Fresh: the output of a folded layer, a convolution, linear layer or BN, or an
    out-of-place ReLU or addition (never a graph input, a parameter or what a module may alias, such as
    Identity's or Dropout's output)."""
    modules = dict(gm.named_modules())
    fresh: set[fx.Node] = set()

    def sole(arg: Any, user: fx.Node) -> bool:
        return isinstance(arg, fx.Node) and arg in fresh and len(arg.users) == 1 and next(iter(arg.users)) is user

    changed = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(modules.get(node.target), _FRESH_MODULES) \
                and not _hooked(modules[node.target]):
            fresh.add(node)
            continue
        new = None
        if _is_relu(node, modules):
            arg = node.args[0]
            if sole(arg, node) and arg.op == "call_function" and arg.target is _add_into:
                with gm.graph.inserting_after(node):  # relu(a + b) in one pass, the addition's node erased
                    new = gm.graph.call_function(_add_relu_into, arg.args)
                node.replace_all_uses_with(new)
                gm.graph.erase_node(node)
                gm.graph.erase_node(arg)
                fresh.add(new)
                changed += 1
                continue
            if sole(arg, node):
                with gm.graph.inserting_after(node):
                    new = gm.graph.call_function(torch.relu_, (arg,))
            else:
                fresh.add(node)
        elif _is_add(node):
            a, b = node.args
            if a is b:
                fresh.add(node)
            elif sole(a, node):
                with gm.graph.inserting_after(node):
                    new = gm.graph.call_function(_add_into, (a, b))
            elif sole(b, node):  # float addition is commutative: b + a is a + b to the bit
                with gm.graph.inserting_after(node):
                    new = gm.graph.call_function(_add_into, (b, a))
            else:
                fresh.add(node)
        if new is not None:
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            fresh.add(new)  # it is its (fresh, otherwise unread) input
            changed += 1
    return changed


class FoldedForward:
    """The model's eval-mode forward with its layer -> BN pairs folded; call `refresh_` after each move.

    Attributes:
        module: the traced ``fx.GraphModule`` (sharing the model's other submodules).
        folded: the folded units, one per pair.
        inplace_ops: ReLUs and additions made in place.
    """

    def __init__(self, module: fx.GraphModule, folded: list[_Folded], inplace_ops: int = 0):
        self.module, self.folded, self.inplace_ops = module, folded, inplace_ops

    @property
    def pairs(self) -> int:
        """The number of layer -> BN pairs folded."""
        return len(self.folded)

    @classmethod
    def build(cls, model: nn.Module, *, inplace: bool = True) -> Optional["FoldedForward"]:
        """The folded forward of `model`, or None when it cannot be traced or has no foldable pair (never
        raises for a model). `inplace`: also make the ReLUs and additions on fresh intermediates in place.
        The model itself is not changed; build it after any ``.to(device / memory_format)``."""
        try:
            gm = fx.symbolic_trace(model)
        except Exception:  # data-dependent control flow, unsupported Python: the plain forward stays
            return None
        modules = dict(gm.named_modules())
        folded = []
        for node in list(gm.graph.nodes):
            prev = _fold_target(node, modules)
            if prev is None:
                continue
            unit = _Folded(modules[prev.target], modules[node.target])
            unit.train(False)
            name = f"bnfold_{len(folded)}"
            gm.add_submodule(name, unit)
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(name, prev.args, prev.kwargs)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            gm.graph.erase_node(prev)
            folded.append(unit)
        if not folded:
            return None
        changed = _make_inplace(gm) if inplace else 0
        try:
            gm.graph.lint()
            gm.recompile()
        except Exception:
            return None
        out = cls(gm, folded, changed)
        out.refresh_()
        return out

    def refresh_(self) -> None:
        """Recomputes every folded W', b' from the model's current weights and BN statistics, in place."""
        for unit in self.folded:
            unit.refresh_()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
