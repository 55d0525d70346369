"""The Python API behind ``import loss_landscape as ll`` (whose names are listed in loss_landscape/__init__.py):
landscapes in memory (`inmemory`), models and file-backed surfaces (`files`), figures (`figures`), and the checks
on what a notebook hands in (`inputs`).

This file imports nothing, so that `figures` loads without torch.
"""
