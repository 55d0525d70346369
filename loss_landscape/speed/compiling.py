"""When to run the model through ``torch.compile``, and compiling it with its cost measured.

Measured on 2 CPU cores (inductor, gcc; ResNet-20, eval, no_grad, channels_last, batch 128, 1000 CIFAR-sized images
per point; `benchmarks/bench_fold.py`): a cold first compile takes 22 to 26 s, and the first evaluation of a set
whose last batch is shorter recompiles for it (7 to 14 s more). The plain model then runs 1.5 times faster
(0.604 -> 0.398 s per point), but the BN-folded forward with in-place ReLU/add (`speed.fold`, 0.401 s per point
eager) gains nothing: compiled it took 0.456 s. So ``--compile auto`` (the default) compiles when the points this
rank will evaluate, at the measured eager time per point, would save more than `MARGIN` times the compile time at
the conservative `SPEEDUP`, and never for a folded forward (`FOLDED_SPEEDUP`); small grids, the tests and quick
looks stay eager. The choice, its reason and the measured compile time are recorded in the surface file
(``speed.compile*``).

Example:
    >>> decide_compile("auto", point_seconds=0.6, points=2601)[0]      # a 51x51 CIFAR surface on a CPU
    True
    >>> decide_compile("auto", point_seconds=0.01, points=441)         # the embedded default
    (False, 'auto: eager, 441 points x 0.01 s would save ~1 s, less than 2 x the ~30 s of compiling')
    >>> decide_compile("auto", point_seconds=0.4, points=2601, speedup=FOLDED_SPEEDUP)[0]
    False
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch

__all__ = ["COMPILE_SECONDS", "FOLDED_SPEEDUP", "MARGIN", "SPEEDUP", "compile_forward", "decide_compile"]

COMPILE_SECONDS = 30.0  # a first compile of a CIFAR ResNet and its short-last-batch recompile (ResNet-20: 22 + 7 s)
SPEEDUP = 1.3  # the gain assumed per point for a plain model (ResNet-20 on 2 CPU cores: 1.52x measured)
FOLDED_SPEEDUP = 1.0  # for a `speed.fold` forward (measured 0.88x: inductor adds nothing to folded, in-place ops)
MARGIN = 2.0


def decide_compile(mode: str, *, point_seconds: float, points: int, compile_seconds: float = COMPILE_SECONDS,
                   speedup: float = SPEEDUP, margin: float = MARGIN) -> tuple[bool, str]:
    """(compile?, a one-line reason) for ``--compile`` `mode` (``on``, ``off``, ``auto``).

    ``auto`` compiles only when ``points * point_seconds * (1 - 1/speedup) > margin * compile_seconds``; pass
    ``speedup=FOLDED_SPEEDUP`` when the forward is a `speed.fold.FoldedForward`."""
    if mode == "on":
        return True, "on: asked"
    if mode == "off":
        return False, "off: asked"
    if mode != "auto":
        raise ValueError(f"compile mode must be auto, on or off, got {mode!r}")
    saved = points * point_seconds * (1.0 - 1.0 / speedup)
    verdict = saved > margin * compile_seconds
    return verdict, (f"auto: {'compiled' if verdict else 'eager'}, {points} points x {point_seconds:.2g} s would "
                     f"save ~{saved:.0f} s, {'more' if verdict else 'less'} than {margin:g} x the "
                     f"~{compile_seconds:.0f} s of compiling")


def compile_forward(fn: Callable[..., Any], example_call: Callable[[Callable[..., Any]], Any]
                    ) -> tuple[Callable[..., Any], float, Optional[str]]:
    """(the compiled `fn`, seconds it took, None), compiling on `example_call(compiled)` under ``no_grad``; or
    (`fn` itself, seconds spent, why: one line) when compiling fails (no C++ compiler, an unsupported operation),
    so a surface never fails for want of a compiler. Let `example_call` run every input shape the evaluation will
    see (a full batch and the set's last, shorter one), or the recompile for the other lands in the first point.

    Example:
        >>> net = torch.nn.Linear(3, 2)
        >>> fn, seconds, failure = compile_forward(net, lambda f: f(torch.randn(4, 3)))
        >>> failure is None or fn is net
        True
    """
    t0 = time.perf_counter()
    try:
        compiled = torch.compile(fn)
        with torch.no_grad():
            example_call(compiled)
    except Exception as e:  # inductor's failures are many and varied; eager always works
        return fn, time.perf_counter() - t0, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return compiled, time.perf_counter() - t0, None
