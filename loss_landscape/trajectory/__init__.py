"""Optimization trajectories: PCA directions of checkpoints (`pca`) and projecting runs (`runs`).
"""

