"""Whether a process of this host is still running (a zombie counts as ended)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while process `pid` of this host runs; False once it has ended, zombies included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as s:
            return s.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
