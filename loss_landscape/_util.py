"""Helpers written once: crash-safe file replacement, importing a user's ``pkg.module:name``, and the rank and
size of an optional communicator. Imports nothing of the package but its errors.
"""

from __future__ import annotations

import importlib
import os
import socket
import stat
import sys
from typing import Any, Callable, Optional, TypeVar

from loss_landscape.errors import UserError

T = TypeVar("T")


def host_tag() -> str:
    """This host's name, reduced to characters safe in a file name."""
    return "".join(c if c.isalnum() or c in "._" else "_" for c in socket.gethostname()) or "host"


def temp_name(target: str) -> str:
    """The temporary file beside `target` that this process writes: ``<target>.tmp-<host>-<pid>``, so that
    a later run can tell a dead process's leftover from a live one's (`surface.storage`)."""
    return f"{target}.tmp-{host_tag()}-{os.getpid()}"


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[str], T]) -> T:
    """Calls ``write(tmp)`` for a temporary file beside `path`, fsyncs it, renames it over `path` (keeping
    the old file's permissions) and fsyncs the folder: a kill at any moment leaves the old file or the new
    one, never half of one. The temporary file is removed if anything fails. Returns what `write` returned.

    Example:
        >>> atomic_write("notes.txt", lambda tmp: open(tmp, "w").write("ok"))  # doctest: +SKIP
        2
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temp_name(path)
    mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else None
    try:
        result = write(tmp)
        fsync_path(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    try:
        fsync_path(folder)  # the rename itself survives a power failure
    except OSError:
        pass  # folders cannot be opened on some systems; the rename is still atomic
    return result


def is_object_spec(spec: str) -> bool:
    """Whether `spec` has the ``pkg.module:name`` form (`import_object` says why not, and imports it)."""
    module_name, _, attr = spec.partition(":")
    return bool(module_name) and bool(attr) and ":" not in attr


def import_object(spec: str, *, what: str, expected: str, error: type[UserError] = UserError) -> Any:
    """The object named by ``pkg.module:name`` (``name`` may be dotted: ``module:Class.method``), importing
    from the current folder as well (commands run as ``python plot_surface.py`` put only the script's folder
    on ``sys.path``). A bad spec, a module that cannot be imported, or a missing or non-callable name raises
    `error` with one line naming `what` the spec was for and what is `expected`."""
    if not is_object_spec(spec):
        raise error(f"bad {what} {spec!r}: {expected}")
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise error(f"cannot import module {module_name!r} of {what} {spec!r} ({e}): {expected}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise error(f"module {module_name!r} has no attribute {attr!r} ({what} {spec!r}): {expected}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise error(f"{what} {spec!r} is a {type(obj).__name__}, not a function: {expected}")
    return obj


def rank_and_size(comm: Optional[Any]) -> tuple[int, int]:
    """(rank, number of ranks) of `comm`; (0, 1) without one."""
    return (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
