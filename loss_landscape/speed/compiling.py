"""When to run the model through ``torch.compile``, and compiling it with its cost measured.

Compiling costs tens of seconds once (25 s for ResNet-20 on 2 CPU cores, inductor) and then makes each forward pass
cheaper (there, 1.3 to 4 times). ``--compile auto`` (the default) compiles when the points this rank will evaluate,
at the measured eager time per point, would save at least `MARGIN` times the compile time even at the conservative
`SPEEDUP`; small grids, the tests and quick looks stay eager. The choice, its reason and the measured compile time
are recorded in the surface file (``speed.compile*``).

Example:
    >>> decide_compile("auto", point_seconds=0.5, points=2601)[0]     # a 51x51 CIFAR surface on a CPU
    True
    >>> decide_compile("auto", point_seconds=0.01, points=441)         # the embedded default
    (False, 'auto: eager, 441 points x 0.01 s would save ~1 s, less than 2 x the ~30 s of compiling')
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch

__all__ = ["COMPILE_SECONDS", "MARGIN", "SPEEDUP", "compile_forward", "decide_compile"]

COMPILE_SECONDS = 30.0  # a typical first compile of a CIFAR ResNet (25 s measured for ResNet-20 on 2 CPU cores)
SPEEDUP = 1.3  # the gain assumed per point (measured 1.3x to 4x on CPU for ResNet-20; more with small batches)
MARGIN = 2.0


def decide_compile(mode: str, *, point_seconds: float, points: int, compile_seconds: float = COMPILE_SECONDS,
                   speedup: float = SPEEDUP, margin: float = MARGIN) -> tuple[bool, str]:
    """(compile?, a one-line reason) for ``--compile`` `mode` (``on``, ``off``, ``auto``)."""
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
    (`fn` itself, seconds spent, why) when compiling fails (no C++ compiler, an unsupported operation), so a
    surface never fails for want of a compiler."""
    t0 = time.perf_counter()
    try:
        compiled = torch.compile(fn)
        with torch.no_grad():
            example_call(compiled)
    except Exception as e:  # inductor's failures are many and varied; eager always works
        return fn, time.perf_counter() - t0, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return compiled, time.perf_counter() - t0, None
