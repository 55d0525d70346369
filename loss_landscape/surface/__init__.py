"""Surfaces: the HDF5 file (`grid`, `file`, `reader`, `storage`), computing one (`compute`, `job`),
Hessian eigenvalue maps (`eigen`), statistics of a surface (`stats`, `spread`) and exports (`export`).

Import the module you need (``from loss_landscape.surface.reader import read_surface``); this package
file imports nothing, so the plotting commands read a surface without loading torch.
"""

