"""Exporting a 2D surface as a 3D mesh: VTP for ParaView, binary PLY for Blender/MeshLab, HTML for a browser.

The mesh is the surface's own grid (or a finer one with ``interp``): point ``k = j * nx + i`` sits at
``(x[i], y[j], z[j, i])`` where z is the height after the optional clipping and log (see `prepare_mesh`).

Missing points (NaN or +-inf height, e.g. not computed yet, diverged, or the log of a value <= -0.1):
a grid cell is kept only when its four corners are finite, so holes appear where values are missing.

- VTP keeps all nx * ny points in grid order, so its arrays line up with the file's values; a missing
  point has the height NaN, its point-data values as they are (NaN or inf), and belongs to no cell.
  Cells are the grid's quads, (nx - 1) * (ny - 1) of them when every point is finite.
- PLY leaves missing points out (viewers and slicers choke on NaN coordinates): vertices are the finite
  points in grid order, faces two triangles per kept quad.
- HTML shows missing points as gaps of the plotly surface.

Files of the original tool mark points never computed with -1, and `read_surface` keeps that value: it
is exported as a value (a hole only with ``log``, where log(-1 + 0.1) is NaN).

VTK (``vtk``) and plotly are imported only by the writers that need them.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field

import numpy as np

from loss_landscape.surface.reader import Surface
from loss_landscape.errors import SurfaceError

FORMATS = ("vtp", "ply", "html")
INTERP_METHODS = ("cubic", "linear")
LOG_OFFSET = 0.1  # the original's log(z + 0.1)


@dataclass
class Mesh:
    """A surface ready to export: coordinates, height, and the named point values.

    Attributes:
        x: (nx,) coordinates along the first direction.
        y: (ny,) coordinates along the second direction.
        z: (ny, nx) height, [j, i] at (x[i], y[j]); non-finite where missing.
        z_name: what the height is, e.g. ``train_loss`` or ``log(train_loss + 0.1)``.
        arrays: point values by name, each (ny, nx): the quantity itself (interpolated if asked,
            never clipped or logged) and, when it differs, the height under `z_name`.
        source: the surface file.
        quantity: the surface quantity, e.g. ``train_loss``.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    z_name: str
    arrays: dict = field(default_factory=dict)
    source: str = ""
    quantity: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return self.z.shape

    def finite(self) -> np.ndarray:
        """(ny, nx) mask of the points with a finite height."""
        return np.isfinite(self.z)

    def quads(self) -> np.ndarray:
        """(m, 4) point indices of the grid cells whose four corners are finite, counter-clockwise
        seen from +z: (i, j), (i+1, j), (i+1, j+1), (i, j+1)."""
        ny, nx = self.shape
        k = np.arange(ny * nx).reshape(ny, nx)
        quads = np.stack([k[:-1, :-1], k[:-1, 1:], k[1:, 1:], k[1:, :-1]], axis=-1).reshape(-1, 4)
        ok = self.finite().ravel()
        return quads[ok[quads].all(axis=1)]

    def points(self) -> np.ndarray:
        """(nx * ny, 3) float64 points (x, y, height) in grid order."""
        X, Y = np.meshgrid(self.x, self.y)
        return np.column_stack([X.ravel(), Y.ravel(), self.z.ravel()])


def resample(x: np.ndarray, y: np.ndarray, values: np.ndarray, num: int, *,
             method: str = "cubic") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resamples a (ny, nx) grid onto `num` x `num` points spanning the same x and y range.

    The original used ``interp2d(kind="cubic")``, removed in SciPy 1.14. ``cubic`` (the default)
    fits the same interpolating bicubic spline with `scipy.interpolate.RectBivariateSpline`; it needs
    at least 4 points per axis and every value finite. ``linear`` is
    `scipy.interpolate.RegularGridInterpolator`'s bilinear interpolation: a missing value spoils only
    the cells around it. Both pass through the values at the original nodes.

    Args:
        x: (nx,) increasing coordinates.
        y: (ny,) increasing coordinates.
        values: (ny, nx), [j, i] at (x[i], y[j]).
        num: points per axis of the new grid, at least 2.
        method: ``cubic`` or ``linear``.

    Returns:
        The new (x, y, values), values of shape (num, num).

    Raises:
        SurfaceError: for a bad `num` or `method`, or a surface that cubic interpolation cannot fit.

    Example:
        >>> x = y = np.linspace(-1, 1, 5)
        >>> _, _, v = resample(x, y, np.add.outer(y, x), 9, method="linear")
        >>> v.shape, float(v[8, 8])
        ((9, 9), 2.0)
    """
    from scipy.interpolate import RectBivariateSpline, RegularGridInterpolator

    if method not in INTERP_METHODS:
        raise SurfaceError(f"unknown interpolation method {method!r}: expected one of {', '.join(INTERP_METHODS)}")
    if int(num) != num or num < 2:
        raise SurfaceError(f"--interp must be at least 2 points per axis (or -1 for none), got {num}")
    values = np.asarray(values, dtype=float)
    if method == "cubic":
        if min(len(x), len(y)) < 4:
            raise SurfaceError(f"cubic interpolation needs at least 4 points per axis, the grid is "
                               f"{len(x)} x {len(y)}; use --interp_method linear")
        missing = int((~np.isfinite(values)).sum())
        if missing:
            raise SurfaceError(f"cubic interpolation needs every value finite, {missing} of {values.size} are NaN "
                               f"or inf; use --interp_method linear")
    xs = np.linspace(x[0], x[-1], int(num))
    ys = np.linspace(y[0], y[-1], int(num))
    if method == "cubic":
        # An interpolating bicubic spline (s=0): FITPACK's regrid, what interp2d(kind="cubic") fitted to
        # gridded data, so the original's resampled surfaces come out the same.
        out = RectBivariateSpline(y, x, values, kx=3, ky=3, s=0)(ys, xs)
    else:
        Y, X = np.meshgrid(ys, xs, indexing="ij")
        with np.errstate(invalid="ignore"):  # inf - inf around diverged points gives NaN, a hole: wanted
            out = RegularGridInterpolator((y, x), values, method="linear")(np.column_stack([Y.ravel(), X.ravel()]))
        out = out.reshape(len(ys), len(xs))
    return xs, ys, out


def prepare_mesh(surface: Surface, *, surf_name: str = "train_loss", zmax: float = -1, log: bool = False,
                 interp: int = -1, interp_method: str = "cubic") -> Mesh:
    """Turns one quantity of a 2D surface into a `Mesh`, in the original's order: interpolate, clip, log.

    Args:
        surface: from `surface.reader.read_surface` (our files or the original's).
        surf_name: the quantity, e.g. ``train_loss`` or ``test_acc``.
        zmax: values above it are clipped to it when > 0; -1 (or any value <= 0) keeps them.
        log: height = log(value + 0.1), as the original.
        interp: resample on an interp x interp grid over the same range (see `resample`); -1: none.
        interp_method: ``cubic`` or ``linear``.

    Returns:
        The mesh; its ``arrays`` hold `surf_name` and, with `zmax` or `log`, the height.

    Raises:
        SurfaceError: a 1D surface, an unknown `surf_name`, a bad `interp`.

    Example:
        >>> prepare_mesh(read_surface("surf.h5"), zmax=10, log=True).z_name  # doctest: +SKIP
        'log(min(train_loss, 10) + 0.1)'
    """
    if surface.ndim != 2:
        raise SurfaceError(f"{surface.path} is a 1D surface; VTP/PLY/HTML export needs a 2D surface "
                           f"(use plot_1D.py for 1D)")
    if surf_name not in surface.values:
        raise SurfaceError(f"{surface.path} has no {surf_name!r}; it has {', '.join(sorted(surface.values)) or 'none'}")
    if not (interp == -1 or interp >= 2):
        raise SurfaceError(f"--interp must be at least 2 points per axis (or -1 for none), got {interp}")
    x, y = np.asarray(surface.x, dtype=float), np.asarray(surface.y, dtype=float)
    values = np.asarray(surface.values[surf_name], dtype=float)
    if values.shape != (len(y), len(x)):
        raise SurfaceError(f"{surface.path}: {surf_name} has shape {values.shape}, expected (len(y), len(x)) = "
                           f"{(len(y), len(x))}")
    if interp > 0:
        x, y, values = resample(x, y, values, interp, method=interp_method)
    z, z_name = values.copy(), surf_name
    if zmax > 0:
        with np.errstate(invalid="ignore"):
            z = np.where(z > zmax, zmax, z)
        z_name = f"min({z_name}, {zmax:g})"
    if log:
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.log(z + LOG_OFFSET)
        z_name = f"log({z_name} + {LOG_OFFSET:g})"
    arrays = {surf_name: values}
    if z_name != surf_name:
        arrays[z_name] = z
    return Mesh(x=x, y=y, z=z, z_name=z_name, arrays=arrays, source=surface.path, quantity=surf_name)


def output_stem(surf_file: str, *, surf_name: str = "train_loss", zmax: float = -1, log: bool = False,
                interp: int = -1, interp_method: str = "cubic", prefix: str | None = None) -> str:
    """The output path without extension: ``<prefix>_<surf_name>[_log][_zmaxZ][_interpN[_linear]]``.

    Args:
        surf_file: the surface file; without `prefix`, outputs go next to it, named after it without ``.h5``.
        surf_name, zmax, log, interp, interp_method: as for `prepare_mesh`.
        prefix: replaces the surface file's path without extension.

    Example:
        >>> output_stem("runs/s.h5", log=True, zmax=10)
        'runs/s_train_loss_log_zmax10'
    """
    stem = f"{prefix if prefix else os.path.splitext(surf_file)[0]}_{surf_name}"
    if log:
        stem += "_log"
    if zmax > 0:
        stem += f"_zmax{zmax:g}"
    if interp > 0:
        stem += f"_interp{interp}" + ("" if interp_method == "cubic" else f"_{interp_method}")
    return stem


# ----------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------

def write_vtp(mesh: Mesh, path: str) -> str:
    """Writes `mesh` as VTK XML PolyData (zlib-compressed binary) with VTK's own writer.

    Points: all nx * ny grid points (x, y, height) in grid order, float64, the height NaN where
    missing. Cells: the quads with four finite corners. Point data: every array of ``mesh.arrays``
    (the height is the active scalar). Field data: ``source`` and ``quantity``.

    Example:
        >>> write_vtp(prepare_mesh(read_surface("s.h5")), "s_train_loss.vtp")  # doctest: +SKIP
        's_train_loss.vtp'
    """
    try:
        from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
        from vtkmodules.vtkCommonCore import vtkPoints, vtkStringArray
        from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
        from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter
    except ImportError as e:
        raise SurfaceError(f"VTP export needs VTK's Python package (python -m pip install vtk): {e}") from None

    points = mesh.points()
    points[~np.isfinite(points[:, 2]), 2] = np.nan  # -inf/+inf heights are missing too
    vtk_points = vtkPoints()
    vtk_points.SetData(numpy_to_vtk(np.ascontiguousarray(points), deep=True))
    quads = mesh.quads()
    cells = vtkCellArray()
    offsets = np.arange(0, 4 * len(quads) + 1, 4, dtype=np.int64)
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(np.ascontiguousarray(quads.ravel(), dtype=np.int64), deep=True))
    poly = vtkPolyData()
    poly.SetPoints(vtk_points)
    poly.SetPolys(cells)
    for name, values in mesh.arrays.items():
        arr = numpy_to_vtk(np.ascontiguousarray(np.asarray(values, dtype=float).ravel()), deep=True)
        arr.SetName(name)
        poly.GetPointData().AddArray(arr)
    poly.GetPointData().SetActiveScalars(mesh.z_name)
    for key in ("source", "quantity"):
        s = vtkStringArray()
        s.SetName(key)
        s.InsertNextValue(str(getattr(mesh, key)))
        poly.GetFieldData().AddArray(s)
    writer = vtkXMLPolyDataWriter()
    writer.SetFileName(path)
    writer.SetInputData(poly)
    writer.SetDataModeToBinary()
    if writer.Write() != 1:
        raise SurfaceError(f"cannot write {path} (VTK's writer failed)")
    return path


def vertex_colors(z: np.ndarray, *, cmap: str = "viridis") -> np.ndarray:
    """(n, 3) uint8 colours of heights `z` from a matplotlib colormap spanning their finite range.

    Example:
        >>> vertex_colors(np.array([0.0, 1.0])).tolist()
        [[68, 1, 84], [253, 231, 37]]
    """
    from matplotlib import colormaps

    z = np.asarray(z, dtype=float)
    ok = np.isfinite(z)
    lo, hi = (float(z[ok].min()), float(z[ok].max())) if ok.any() else (0.0, 1.0)
    t = np.zeros_like(z) + 0.5 if hi <= lo else (z - lo) / (hi - lo)
    rgba = colormaps[cmap](np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0))
    return np.round(rgba[:, :3] * 255).astype(np.uint8)


PLY_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
PLY_FACE = np.dtype([("n", "u1"), ("v", "<i4", (3,))])


def write_ply(mesh: Mesh, path: str, *, cmap: str = "viridis") -> str:
    """Writes `mesh` as binary little-endian PLY: float32 vertices with uchar RGB colours, triangles.

    Vertices are the finite points in grid order, coloured by height with `cmap` over its finite
    range; each quad with four finite corners gives two triangles, counter-clockwise seen from +z.
    Coordinates are the surface's own (no scaling). Header comments name the source and quantity.

    Example:
        >>> write_ply(prepare_mesh(read_surface("s.h5")), "s_train_loss.ply")  # doctest: +SKIP
        's_train_loss.ply'
    """
    points = mesh.points()
    ok = np.isfinite(points[:, 2])
    new_index = np.cumsum(ok) - 1
    quads = new_index[mesh.quads()]
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]], axis=0) if len(quads) else \
        np.zeros((0, 3), dtype=np.int64)
    verts = np.zeros(int(ok.sum()), dtype=PLY_VERTEX)
    for c, name in enumerate("xyz"):
        verts[name] = points[ok, c]
    rgb = vertex_colors(points[ok, 2], cmap=cmap)
    verts["red"], verts["green"], verts["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    faces = np.zeros(len(tris), dtype=PLY_FACE)
    faces["n"] = 3
    faces["v"] = tris
    comments = [f"source {os.path.basename(mesh.source)}", f"height {mesh.z_name}", f"colormap {cmap}"]
    header = ["ply", "format binary_little_endian 1.0",
              *(f"comment {' '.join(c.split())}" for c in comments),
              f"element vertex {len(verts)}", "property float x", "property float y", "property float z",
              "property uchar red", "property uchar green", "property uchar blue",
              f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    try:
        with open(path, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii", "replace"))
            f.write(verts.tobytes())
            f.write(faces.tobytes())
    except OSError as e:
        raise SurfaceError(f"cannot write {path}: {e}") from None
    return path


def write_html(mesh: Mesh, path: str, *, cmap: str = "Viridis") -> str:
    """Writes one self-contained HTML page (plotly.js embedded, no network needed) with a rotatable
    3D surface, hover values (x, y, the quantity and the height) and a colour scale.

    Example:
        >>> write_html(prepare_mesh(read_surface("s.h5")), "s_train_loss.html")  # doctest: +SKIP
        's_train_loss.html'
    """
    try:
        import plotly.graph_objects as go
    except ImportError as e:
        raise SurfaceError(f"HTML export needs plotly (python -m pip install plotly): {e}") from None

    z = np.where(np.isfinite(mesh.z), mesh.z, np.nan)
    transformed = mesh.z_name != mesh.quantity
    if transformed:  # hover shows the value itself (customdata) and the height
        # plotly.js looks a surface's customdata up as [x index][y index], the transpose of z's [j, i]
        extra = dict(customdata=np.asarray(mesh.arrays[mesh.quantity], dtype=float).T)
        hover = (f"x = %{{x:.4g}}<br>y = %{{y:.4g}}<br>{mesh.quantity} = %{{customdata:.6g}}"
                 f"<br>{mesh.z_name} = %{{z:.6g}}")
    else:
        extra, hover = {}, f"x = %{{x:.4g}}<br>y = %{{y:.4g}}<br>{mesh.quantity} = %{{z:.6g}}"
    fig = go.Figure(go.Surface(x=mesh.x, y=mesh.y, z=z, colorscale=cmap, hovertemplate=hover + "<extra></extra>",
                               colorbar=dict(title=dict(text=mesh.z_name, side="right")), **extra))
    title = f"{os.path.basename(mesh.source)}: {mesh.z_name}"
    fig.update_layout(title=dict(text=title, x=0.5), margin=dict(l=10, r=30, t=50, b=10),
                      scene=dict(xaxis_title="x", yaxis_title="y", zaxis_title=mesh.z_name,
                                 camera=dict(eye=dict(x=1.5, y=-1.5, z=1.1))))
    # Our own page around plotly's div (plotly.js inlined): a <title> for the tab, and no body margin,
    # which would otherwise push a full-height plot past the window.
    div = fig.to_html(full_html=False, include_plotlyjs=True, default_height="100%", config={"displaylogo": False})
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>html, body {{height: 100%; margin: 0;}}</style>\n</head>\n<body>\n{div}\n</body>\n</html>\n")
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise SurfaceError(f"cannot write {path}: {e}") from None
    return path


WRITERS = {"vtp": write_vtp, "ply": write_ply, "html": write_html}


def export_surface(surface: Surface, *, surf_name: str = "train_loss", formats=("vtp",), zmax: float = -1,
                   log: bool = False, interp: int = -1, interp_method: str = "cubic",
                   prefix: str | None = None) -> list[str]:
    """Exports one quantity of a 2D surface in each of `formats`; returns the files written.

    Args:
        surface: from `surface.reader.read_surface`.
        surf_name: the quantity (default ``train_loss``).
        formats: any of ``vtp``, ``ply``, ``html``.
        zmax, log, interp, interp_method: see `prepare_mesh`.
        prefix: output path prefix (default: the surface file without ``.h5``); see `output_stem`.

    Example:
        >>> export_surface(read_surface("s.h5"), formats=("vtp", "html"), log=True)  # doctest: +SKIP
        ['s_train_loss_log.vtp', 's_train_loss_log.html']
    """
    bad = [f for f in formats if f not in WRITERS]
    if bad:
        raise SurfaceError(f"unknown format {bad[0]!r}: expected {', '.join(FORMATS)}")
    mesh = prepare_mesh(surface, surf_name=surf_name, zmax=zmax, log=log, interp=interp,
                        interp_method=interp_method)
    stem = output_stem(surface.path, surf_name=surf_name, zmax=zmax, log=log, interp=interp,
                       interp_method=interp_method, prefix=prefix)
    folder = os.path.dirname(os.path.abspath(stem))
    if not os.path.isdir(folder):
        raise SurfaceError(f"cannot write {stem}.*: folder {folder} does not exist")
    return [WRITERS[fmt](mesh, f"{stem}.{fmt}") for fmt in dict.fromkeys(formats)]
