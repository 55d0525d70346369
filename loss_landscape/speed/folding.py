"""Eval-mode BatchNorm folded into the convolution or linear layer before it, refreshed at every grid point.

In eval mode ``bn(conv(x))`` is one affine map per output channel after the convolution, so it equals a
convolution with W' = W * s and b' = (b - mean) * s + beta, where s = gamma / sqrt(var + eps). The grid point's
weights and BN statistics are known (the `Perturber` has just written them into the model), so the fold is exact
up to float rounding and costs O(parameters) per point, while the forward pass saves a full read and write of
every BN layer's activations.

`FoldedForward.build` traces the model once with ``torch.fx`` and replaces each (Conv1d/2d/3d or Linear) -> BN
pair whose convolution output feeds only that BN by one module reading preallocated W', b' buffers;
`refresh_` recomputes them from the model's live tensors in place (no allocation per point). The traced module
shares every other submodule with the model, so it follows the Perturber's in-place writes. A model that cannot
be traced, or has no such pair, gives None.

Example:
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> folded = FoldedForward.build(net)
    >>> folded.pairs
    1
    >>> x = torch.randn(2, 3, 8, 8)
    >>> folded.refresh_(); torch.allclose(folded(x), net(x), atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FoldedForward"]

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class _Folded(nn.Module):
    """A convolution (or linear layer) with its following eval-mode BN folded in; W' and b' are buffers."""

    def __init__(self, layer: nn.Module, bn: _BatchNorm):
        super().__init__()
        self._src = (layer, bn)  # a tuple: not registered as submodules (they stay the model's)
        self.register_buffer("weight", torch.empty_like(layer.weight))
        self.register_buffer("bias", torch.empty(bn.num_features, device=layer.weight.device,
                                                 dtype=layer.weight.dtype))
        self.register_buffer("scale", torch.empty_like(self.bias))

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
        layer = self._src[0]
        if isinstance(layer, nn.Linear):
            return F.linear(x, self.weight, self.bias)
        return layer._conv_forward(x, self.weight, self.bias)


def _pair(node: fx.Node, modules: dict[str, nn.Module]) -> Optional[fx.Node]:
    """The layer node `node` (a BN call) can be folded into, or None."""
    if node.op != "call_module" or not isinstance(modules.get(node.target), _BatchNorm):
        return None
    bn = modules[node.target]
    if not bn.track_running_stats or bn.running_var is None or len(node.args) != 1 or node.kwargs:
        return None  # batch statistics even in eval mode: nothing fixed to fold
    prev = node.args[0]
    if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
        return None
    layer = modules.get(prev.target)
    if not isinstance(layer, _FOLDABLE) or layer.weight.shape[0] != bn.num_features:
        return None
    if isinstance(layer, nn.Linear) and not isinstance(bn, nn.BatchNorm1d):
        return None
    if layer.weight.dtype != bn.running_var.dtype or layer.weight.device != bn.running_var.device:
        return None
    return prev


class FoldedForward:
    """The model's forward with its (layer -> eval-mode BN) pairs folded; call `refresh_` after each move."""

    def __init__(self, module: fx.GraphModule, folded: list[_Folded]):
        self.module, self.folded = module, folded

    @property
    def pairs(self) -> int:
        return len(self.folded)

    @classmethod
    def build(cls, model: nn.Module) -> Optional["FoldedForward"]:
        """The folded forward of `model` (in eval mode), or None when it cannot be traced or has no foldable pair.
        The model itself is not changed."""
        try:
            gm = fx.symbolic_trace(model)
        except Exception:  # data-dependent control flow, unsupported ops: the plain forward stays
            return None
        modules = dict(gm.named_modules())
        folded = []
        for node in list(gm.graph.nodes):
            prev = _pair(node, modules)
            if prev is None:
                continue
            unit = _Folded(modules[prev.target], modules[node.target])
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
        gm.graph.lint()
        gm.recompile()
        gm.eval()
        out = cls(gm, folded)
        out.refresh_()
        return out

    def refresh_(self) -> None:
        """Recomputes every folded W', b' from the model's current weights and BN statistics."""
        for unit in self.folded:
            unit.refresh_()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
