"""How a surface file is kept whole on disk: opening it with one-line errors, replacing it crash-safely,
and removing what killed runs left behind.

HDF5 does not survive a kill in the middle of a change to its structure, so `replace_with` writes a complete
new version to ``<file>.tmp-<host>-<pid>`` beside the file, fsyncs it, renames it over the old one and fsyncs
the folder: the file on disk is always the old version or the new one.
"""

from __future__ import annotations

import glob
import os
import time
from typing import Callable

import h5py

from loss_landscape._util import atomic_write, host_tag, unlink_quietly
from loss_landscape.parallel.processes import process_alive
from loss_landscape.errors import SurfaceError

STALE_TEMP_SECONDS = 24 * 3600  # a temporary file this old is a crash's leftover, whoever made it


def h5_reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if "(" in text and text.endswith(")"):
        text = text[text.index("(") + 1:-1]  # "Unable to synchronously open file (truncated file: ...)"
    return text or type(e).__name__


def open_hdf5(path: str, *, writing: bool = False) -> h5py.File:
    """`path` opened read-only, or a SurfaceError saying what the file is instead and what to do."""
    kept = " (it was left unchanged)" if writing else ""
    if os.path.isdir(path):
        raise SurfaceError(f"{path} is a folder, not a surface file: give a file name")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise SurfaceError(f"cannot read surface file {path}: {e.strerror or e}") from None
    if size == 0:
        raise SurfaceError(f"{path} is empty (0 bytes), not a surface file: delete it, or choose another "
                           f"--surf_file")
    if not h5py.is_hdf5(path):
        raise SurfaceError(f"{path} is not an HDF5 file, so not a surface file: choose another --surf_file or "
                           f"move it away{kept}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise SurfaceError(f"{path} is a damaged or truncated HDF5 file ({h5_reason(e)}): delete it or move it "
                           f"away to start over{kept}") from None


def remove_stale_temp_files(target: str) -> list[str]:
    """Removes the temporary files of `target` that killed runs left: those of dead processes on this host
    (and this process's own), and any older than `STALE_TEMP_SECONDS` (another host's, on a shared
    folder). Returns the paths removed."""
    prefix = f"{target}.tmp"
    removed = []
    for name in glob.glob(glob.escape(target) + ".tmp*"):
        rest = name[len(prefix):]
        if rest.startswith("-"):
            host, _, pid = rest[1:].rpartition("-")
        else:
            host, pid = host_tag(), rest  # ``<file>.tmp<pid>`` of older versions
        if not pid.isdigit():
            continue
        try:
            age = time.time() - os.path.getmtime(name)
        except OSError:
            continue
        local = host == host_tag()
        if (local and (int(pid) == os.getpid() or not process_alive(int(pid)))) or age > STALE_TEMP_SECONDS:
            unlink_quietly(name)
            removed.append(name)
    return removed


def replace_with(target: str, build: Callable[[h5py.File], object], *, shown: str) -> object:
    """Writes a new version of `target` with `build` into a temporary file beside it, fsyncs it and
    renames it over `target` (then fsyncs the folder): a kill at any moment leaves the old version or the
    new one. Returns what `build` returned."""
    def write(tmp: str) -> object:
        with h5py.File(tmp, "w") as new:
            return build(new)

    try:
        return atomic_write(target, write)
    except (OSError, RuntimeError) as e:
        raise SurfaceError(f"cannot write surface file {shown}: {h5_reason(e)} (the file on disk is "
                           f"unchanged)") from None
