"""Pictures of training paths: one or several paths over the filled contours of a loss surface, each
checkpoint's loss and accuracy in a panel beside, and the same figure animated epoch by epoch (GIF, MP4).

No file is read here: surfaces come from `surface.reader.read_surface`, paths from `trajectory.runs.read_runs`.

Frames: one per distinct checkpoint epoch of the runs (one run: one per checkpoint); frame e shows every run up
to its last checkpoint at or before epoch e. The GIF has exactly that many frames, its last shown ``1 + hold``
frame durations; the MP4 (constant frame rate) repeats the last frame ``hold`` times, so it has that many
frames plus ``hold``. Frames are held in memory (width x height x 3 bytes each) for the GIF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from loss_landscape.plotting.figures import plt  # the headless backend is chosen there
from matplotlib.colors import Normalize

if TYPE_CHECKING:
    from loss_landscape.surface.reader import Surface
    from loss_landscape.trajectory.runs import RunPath

COLORS = ("tab:red", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
MIN_LABEL_SPACING = 0.08  # epoch labels at least this far apart, in fractions of the axes (x and y scaled to 1)
AUTO_LEVELS = 24


def _error(message: str) -> Exception:
    from loss_landscape.errors import TrajectoryError  # imported here: plot_2D.py draws paths without loading torch
    return TrajectoryError(message)


def label_subset(x: Sequence[float], y: Sequence[float], xlim: tuple[float, float], ylim: tuple[float, float],
                 min_spacing: float = MIN_LABEL_SPACING) -> list[int]:
    """Indices of the points to label: the last (final) and the first always, then each other point in path
    order whose distance to every chosen one, in axes fractions, is at least `min_spacing`. The last epochs
    crowd near the final point; this labels the spread-out part of the path and one point of each crowd.

    Example:
        >>> label_subset([0, 0.01, 0.5, 1.0], [0, 0, 0, 0], (0, 1), (0, 1), 0.1)
        [0, 2, 3]
    """
    n = len(x)
    if n == 0:
        return []
    sx, sy = (xlim[1] - xlim[0]) or 1.0, (ylim[1] - ylim[0]) or 1.0
    pts = np.column_stack([(np.asarray(x, float) - xlim[0]) / sx, (np.asarray(y, float) - ylim[0]) / sy])
    chosen = [n - 1]
    for i in [0, *range(1, n - 1)]:
        if i not in chosen and np.min(np.hypot(*(pts[chosen] - pts[i]).T)) >= min_spacing:
            chosen.append(i)
    return sorted(chosen)


def draw_path(ax, x, y, epochs: Optional[Sequence[int]] = None, *, color: str = "tab:red", label: str = "trajectory",
              min_spacing: float = MIN_LABEL_SPACING, zorder: int = 4) -> None:
    """A path with a marker per checkpoint, a square at the start, a star at the end, and epoch labels on a
    subset of points at least `min_spacing` apart (`label_subset`); no labels without `epochs`."""
    ax.plot(x, y, "-o", color=color, ms=3, lw=1.2, mec="white", mew=0.4, label=label, zorder=zorder)
    if len(x) == 0:
        return
    ax.plot([x[0]], [y[0]], "s", color=color, ms=5, mec="black", mew=0.5, zorder=zorder + 1)
    ax.plot([x[-1]], [y[-1]], "*", color=color, ms=10, mec="black", mew=0.5, zorder=zorder + 1)
    if epochs is not None:
        draw_path_labels(ax, x, y, epochs, min_spacing)


def surface_levels(z: np.ndarray, vmin: Optional[float] = None, vmax: Optional[float] = None,
                   vlevel: Optional[float] = None) -> np.ndarray:
    """Contour levels vmin, vmin + vlevel, ... < vmax; left out, vmin and vmax are the finite minimum and
    maximum and there are AUTO_LEVELS levels."""
    finite = z[np.isfinite(z)]
    if finite.size == 0:
        raise _error("the surface has no finite values to draw")
    lo = float(finite.min()) if vmin is None else vmin
    hi = float(finite.max()) if vmax is None else vmax
    if not hi > lo:
        hi = lo + 1.0
    if vlevel is None:
        return np.linspace(lo, hi, AUTO_LEVELS + 1)
    if not vlevel > 0 or (hi - lo) / vlevel > 1000:
        raise _error(f"contour levels need vlevel > 0 and at most 1000 levels, got vmin={lo} vmax={hi} "
                              f"vlevel={vlevel}")
    levels = np.arange(lo, hi, vlevel)
    return levels if len(levels) >= 2 else np.array([lo, lo + vlevel])


def surface_array(surface: Surface, surf_name: str, log: bool = False) -> np.ndarray:
    """The (ny, nx) values of `surf_name` (their natural log with `log`), refusing 1D files and unknown names."""
    if surface.ndim != 2:
        raise _error(f"{surface.path} is a 1D surface; a trajectory needs a 2D one")
    if surf_name not in surface.values:
        raise _error(f"{surface.path} has no {surf_name!r}; it has {', '.join(sorted(surface.values))}")
    z = np.array(surface.values[surf_name], dtype=float)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log(z)
    return z


class PathFigure:
    """The figure shared by the static picture and the animation; `show_until(epoch)` redraws the paths (and
    the loss panel) up to an epoch without rebuilding the figure."""

    def __init__(self, paths: Sequence[RunPath], *, surface: Optional[Surface] = None, surf_name: str = "train_loss",
                 levels: Optional[np.ndarray] = None, log: bool = False, labels: tuple[str, str] = ("x", "y"),
                 figsize: Optional[tuple[float, float]] = None, title: str = ""):
        if not paths:
            raise _error("no path to draw")
        self.paths = list(paths)
        self.metrics = any(p.metrics is not None for p in self.paths)
        self.title = title
        if figsize is None:
            figsize = (10.5, 4.3) if self.metrics else (6.2, 4.8)
        self.fig = plt.figure(figsize=figsize)
        grid = self.fig.add_gridspec(1, 2, width_ratios=(1.25, 1)) if self.metrics else self.fig.add_gridspec(1, 1)
        self.ax = self.fig.add_subplot(grid[0, 0])
        self._background(surface, surf_name, levels, log)
        self.ax.set_xlabel(labels[0])
        self.ax.set_ylabel(labels[1])
        self.lines, self.heads = [], []
        for i, p in enumerate(self.paths):
            c = COLORS[i % len(COLORS)]
            (line,) = self.ax.plot([], [], "-o", color=c, ms=3, lw=1.2, mec="white", mew=0.4, label=p.label, zorder=4)
            (head,) = self.ax.plot([], [], "o", color=c, ms=8, mec="black", mew=0.8, zorder=6)
            self.lines.append(line)
            self.heads.append(head)
        self.ax.legend(fontsize=7, loc="lower right", framealpha=0.85)
        self.info = self.ax.text(0.02, 0.98, "", transform=self.ax.transAxes, va="top", ha="left", fontsize=7.5,
                                 family="monospace", zorder=8,
                                 bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "grey", "alpha": 0.85})
        if self.metrics:
            self._loss_panel(grid)
        self.epochs = sorted({e for p in self.paths for e in p.epochs})

    def _background(self, surface, surf_name, levels, log) -> None:
        xs = np.concatenate([p.projection.x for p in self.paths])
        ys = np.concatenate([p.projection.y for p in self.paths])
        lo_x, hi_x, lo_y, hi_y = xs.min(), xs.max(), ys.min(), ys.max()
        if surface is not None:
            z = surface_array(surface, surf_name, log)
            levels = surface_levels(z) if levels is None else levels
            zm = np.ma.masked_invalid(z)
            cs = self.ax.contourf(surface.x, surface.y, zm, levels=levels, cmap="viridis", extend="both",
                                  norm=Normalize(levels[0], levels[-1]), zorder=0)
            self.ax.contour(surface.x, surface.y, zm, levels=levels[::4], colors="white", linewidths=0.4,
                            alpha=0.5, zorder=1)
            self.fig.colorbar(cs, ax=self.ax, label=f"{surf_name} (log)" if log else surf_name, fraction=0.05,
                              format="%.3g")
            lo_x, hi_x = min(lo_x, surface.x.min()), max(hi_x, surface.x.max())
            lo_y, hi_y = min(lo_y, surface.y.min()), max(hi_y, surface.y.max())
        mx, my = 0.04 * ((hi_x - lo_x) or 1.0), 0.04 * ((hi_y - lo_y) or 1.0)
        self.ax.set_xlim(lo_x - mx, hi_x + mx)
        self.ax.set_ylim(lo_y - my, hi_y + my)

    def _loss_panel(self, grid) -> None:
        self.lax = self.fig.add_subplot(grid[0, 1])
        self.aax = self.lax.twinx()
        self.loss_lines, self.acc_lines = [], []
        all_e, all_l, all_a = [], [], []
        for i, p in enumerate(self.paths):
            c = COLORS[i % len(COLORS)]
            (ll,) = self.lax.plot([], [], "-o", color=c, ms=2.5, lw=1.2)
            (al,) = self.aax.plot([], [], "--", color=c, lw=1.0, alpha=0.8)
            self.loss_lines.append(ll)
            self.acc_lines.append(al)
            if p.metrics is not None:
                all_e += list(p.epochs)
                all_l += list(p.metrics.loss)
                all_a += list(p.metrics.acc)
        split = next(p.metrics.split for p in self.paths if p.metrics is not None)
        e0, e1 = min(all_e), max(all_e)
        pad = 0.03 * ((e1 - e0) or 1)
        self.lax.set_xlim(e0 - pad, e1 + pad)
        lo, hi = float(np.nanmin(all_l)), float(np.nanmax(all_l))
        self.lax.set_ylim(lo - 0.05 * ((hi - lo) or 1), hi + 0.05 * ((hi - lo) or 1))
        self.aax.set_ylim(0, 100)
        self.lax.set_xlabel("epoch")
        self.lax.set_ylabel(f"{split} loss (solid)")
        self.aax.set_ylabel(f"{split} accuracy % (dashed)")
        self.lax.set_title(f"each checkpoint's own {split} loss and accuracy", fontsize=9)
        self.now = self.lax.axvline(e0, color="grey", lw=0.8, ls=":")

    def show_until(self, epoch: int) -> None:
        rows = []
        for i, p in enumerate(self.paths):
            n = int(np.sum(np.asarray(p.epochs) <= epoch))
            x, y = p.projection.x[:n], p.projection.y[:n]
            self.lines[i].set_data(x, y)
            self.heads[i].set_data(x[-1:], y[-1:])
            if n == 0:
                rows.append(f"{p.label}: not started")
                continue
            row = f"{p.label}: epoch {p.epochs[n - 1]}"
            if p.metrics is not None:
                row += f"  loss {p.metrics.loss[n - 1]:.3f}"
                if np.isfinite(p.metrics.acc[n - 1]):  # a loss without accuracy (regression, a model's own) has none
                    row += f"  acc {p.metrics.acc[n - 1]:5.1f} %"
                self.loss_lines[i].set_data(p.epochs[:n], p.metrics.loss[:n])
                self.acc_lines[i].set_data(p.epochs[:n], p.metrics.acc[:n])
            rows.append(row)
        self.info.set_text("\n".join(rows))
        self.ax.set_title(f"{self.title}epoch {epoch}" if self.title else f"epoch {epoch}", fontsize=9)
        if self.metrics:
            self.now.set_xdata([epoch, epoch])

    def label_epochs(self, min_spacing: float = MIN_LABEL_SPACING) -> None:
        """Epoch labels on each complete path (`label_subset`), the static picture's; not in animations."""
        for p in self.paths:
            draw_path_labels(self.ax, p.projection.x, p.projection.y, p.epochs, min_spacing)

    def render(self) -> np.ndarray:
        """The current frame as an (H, W, 3) uint8 array with even H and W (what H.264 needs)."""
        self.fig.canvas.draw()
        img = np.asarray(self.fig.canvas.buffer_rgba())[..., :3]
        return np.ascontiguousarray(img[:img.shape[0] // 2 * 2, :img.shape[1] // 2 * 2])


def draw_path_labels(ax, x, y, epochs, min_spacing: float = MIN_LABEL_SPACING) -> None:
    """Epoch labels on the points `label_subset` picks, for the axes' current limits."""
    for i in label_subset(x, y, ax.get_xlim(), ax.get_ylim(), min_spacing):
        ax.annotate(str(epochs[i]), (x[i], y[i]), xytext=(4, 4), textcoords="offset points", fontsize=7, zorder=7,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7})


def figure_paths(paths: Sequence[RunPath], **kwargs):
    """The static picture: every path complete, with epoch labels, and the loss panel when evaluated.

    Args:
        paths: from `trajectory.runs.read_runs` or the command. kwargs: as `PathFigure` (surface, surf_name,
            levels, log, labels, figsize, title).

    Example:
        >>> fig = figure_paths(read_runs("proj.h5")[0], surface=read_surface("surf.h5"))  # doctest: +SKIP
    """
    pf = PathFigure(paths, **kwargs)
    pf.show_until(pf.epochs[-1])
    pf.label_epochs()
    pf.fig.tight_layout()
    return pf.fig


def animate_paths(paths: Sequence[RunPath], prefix: str, *, formats: Sequence[str] = ("gif", "mp4"), fps: float = 4.0,
                  hold: int = 4, dpi: int = 80, log_fn=print, **kwargs) -> dict[str, int]:
    """Writes ``<prefix>.gif`` and/or ``<prefix>.mp4`` of the paths drawn epoch by epoch (module docstring:
    frame counts). Returns {file: frames written}.

    Example:
        >>> animate_paths(read_runs("proj.h5")[0], "path", surface=read_surface("surf.h5"))  # doctest: +SKIP
        {'path.gif': 21, 'path.mp4': 25}
    """
    import imageio.v2 as iio2
    import imageio.v3 as iio
    bad = [f for f in formats if f not in ("gif", "mp4")]
    if bad or not formats:
        raise _error(f"unknown animation format {bad[0] if bad else '(none)'!r}: expected gif and/or mp4")
    if not fps > 0 or hold < 0:
        raise _error(f"--fps must be > 0 and --hold >= 0, got fps={fps} hold={hold}")
    pf = PathFigure(paths, **kwargs)
    pf.fig.set_dpi(dpi)
    pf.show_until(pf.epochs[-1])
    pf.fig.tight_layout()  # once, on the last frame, so that the layout does not move between frames
    out = {}
    frames = []
    writer = None
    if "mp4" in formats:
        writer = iio2.get_writer(f"{prefix}.mp4", format="FFMPEG", fps=fps, codec="libx264", quality=7,
                                 macro_block_size=2, pixelformat="yuv420p", ffmpeg_log_level="error")
    try:
        for e in pf.epochs:
            pf.show_until(e)
            img = pf.render()
            if writer is not None:
                writer.append_data(img)
            if "gif" in formats:
                frames.append(img)
        if writer is not None:
            for _ in range(hold):
                writer.append_data(img)
    finally:
        if writer is not None:
            writer.close()
        plt.close(pf.fig)
    if writer is not None:
        out[f"{prefix}.mp4"] = len(pf.epochs) + hold
    if frames:
        ms = 1000.0 / fps
        iio.imwrite(f"{prefix}.gif", np.stack(frames), extension=".gif", duration=[ms] * (len(frames) - 1) +
                    [ms * (1 + hold)], loop=0)
        out[f"{prefix}.gif"] = len(frames)
    for path, n in out.items():
        log_fn(f"wrote {path} ({n} frames)")
    return out


def count_frames(path: str) -> int:
    """Frames in a GIF or MP4 as read back (imageio; ffmpeg for MP4)."""
    if path.endswith(".mp4"):
        import imageio.v2 as iio2
        with iio2.get_reader(path, format="FFMPEG") as r:
            return r.count_frames()
    import imageio.v3 as iio
    return int(iio.improps(path, index=None).shape[0])


__all__ = ["COLORS", "label_subset", "draw_path", "surface_levels", "surface_array", "PathFigure", "figure_paths",
           "animate_paths", "count_frames"]
