"""Figures of surfaces, with matplotlib and numpy only (never torch): 1D (`one_d`, `one_d_files`),
2D (`two_d`), trajectories and animations (`paths`), and the shared output options (`figures`).
"""

