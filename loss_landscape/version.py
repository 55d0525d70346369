"""The code version recorded in every file this tool writes."""

import functools
import os
import subprocess

__version__ = "0.1.0"


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """Returns the release, plus the git commit when running from a checkout of this tool (not when installed
    into site-packages, which may lie inside some other repository).

    Example:
        >>> code_version()  # doctest: +SKIP
        '0.1.0+g2d91749'
    """
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isfile(os.path.join(os.path.dirname(here), "plot_surface.py")):
        return __version__
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return __version__
    commit = out.stdout.strip()
    return f"{__version__}+g{commit}" if out.returncode == 0 and commit else __version__
