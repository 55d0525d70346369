"""h52vtp.py and surface_export: VTP read back with VTK, PLY parsed independently, HTML opened in headless
Chromium; clipping, log, interpolation, missing points, the original's files, one-line errors."""

from __future__ import annotations

import base64
import doctest
import fcntl
import json
import os
import re
import select
import subprocess
import tempfile
import time
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from loss_landscape.surface import export as surface_export
from conftest import run_command, skip_or_fail, write_original_surface
from loss_landscape.surface.export import output_stem, prepare_mesh, resample
from loss_landscape.surface.grid import Axis, Grid, Provenance, SurfaceJob
from loss_landscape.errors import SurfaceError
from loss_landscape.surface.file import SurfaceFile
from loss_landscape.surface.reader import read_surface

CHROMIUM = "/usr/bin/chromium"


def bowl(a, b):
    """Not symmetric in x and y, with a bilinear term, so swapped axes or a transposed grid show."""
    return (a - 0.3) ** 2 + 2 * (b + 0.1) ** 2 + 0.5 * a * b + 0.2


def make_surface(path, grid, fn, *, skip=(), override=None):
    """A surface file of ours; points in `skip` are never written (NaN), `override` sets {flat: loss}."""
    job = SurfaceJob(grid=grid, directions_sha256="d", dir_type="weights", model="m", model_sha256="s",
                     dataset="digits")
    override = override or {}
    with SurfaceFile.open(str(path), job, ["train", "test"], Provenance()) as f:
        for flat in range(grid.size):
            if flat in skip:
                continue
            loss = override.get(flat, fn(*grid.coords(flat)))
            f.write(flat, {"train": (loss, 90.0), "test": (loss + 0.1, 80.0)})
    return read_surface(str(path))


def read_vtp(path):
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    reader = vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    poly = reader.GetOutput()
    pd = poly.GetPointData()
    arrays = {pd.GetArrayName(k): vtk_to_numpy(pd.GetArray(k)) for k in range(pd.GetNumberOfArrays())}
    polys = poly.GetPolys()
    offsets = vtk_to_numpy(polys.GetOffsetsArray())
    cells = vtk_to_numpy(polys.GetConnectivityArray())
    assert np.all(np.diff(offsets) == 4), "every cell is a quad"
    return vtk_to_numpy(poly.GetPoints().GetData()), arrays, cells.reshape(-1, 4)


def read_ply(path):
    """Parses binary little-endian PLY by hand: vertices (x, y, z, r, g, b) and triangles."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    nv = int(next(ln for ln in header if ln.startswith("element vertex")).split()[-1])
    nf = int(next(ln for ln in header if ln.startswith("element face")).split()[-1])
    props = [ln.split()[1:] for ln in header if ln.startswith("property")]
    assert props == [["float", "x"], ["float", "y"], ["float", "z"], ["uchar", "red"], ["uchar", "green"],
                     ["uchar", "blue"], ["list", "uchar", "int", "vertex_indices"]]
    vdt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    verts = np.frombuffer(data, dtype=vdt, count=nv, offset=end)
    fdt = np.dtype([("n", "u1"), ("v", "<i4", (3,))])
    faces = np.frombuffer(data, dtype=fdt, count=nf, offset=end + nv * vdt.itemsize)
    assert end + nv * vdt.itemsize + nf * fdt.itemsize == len(data), "nothing after the faces"
    assert np.all(faces["n"] == 3)
    return verts, faces["v"]


def grid_points(s):
    X, Y = np.meshgrid(s.x, s.y)
    return X.ravel(), Y.ravel()


def complete_quads(ok):
    """Independent count of the grid cells with four finite corners."""
    return int((ok[:-1, :-1] & ok[:-1, 1:] & ok[1:, 1:] & ok[1:, :-1]).sum())


# ------------------------------------------------------------------------------------------------------------
# VTP
# ------------------------------------------------------------------------------------------------------------

def test_vtp_has_the_grid_points_values_and_cells(tmp_path):
    s = make_surface(tmp_path / "s.h5", Grid(Axis(-1, 1, 7), Axis(-0.5, 1, 5)), bowl)
    out = run_command("h52vtp.py", "--surf_file", str(tmp_path / "s.h5"), cwd=tmp_path)
    vtp = tmp_path / "s_train_loss.vtp"
    assert out.stdout.strip() == f"wrote {vtp}"
    points, arrays, quads = read_vtp(vtp)
    assert points.shape == (7 * 5, 3)
    X, Y = grid_points(s)
    np.testing.assert_array_equal(points[:, 0], X)
    np.testing.assert_array_equal(points[:, 1], Y)
    np.testing.assert_array_equal(points[:, 2], s.values["train_loss"].ravel())
    assert list(arrays) == ["train_loss"]
    np.testing.assert_array_equal(arrays["train_loss"], s.values["train_loss"].ravel())
    assert len(quads) == 6 * 4
    assert quads[0].tolist() == [0, 1, 8, 7] and quads[-1].tolist() == [26, 27, 34, 33]


def test_vtp_keeps_missing_points_without_cells(tmp_path):
    """NaN (never computed) and inf (diverged) points stay, with NaN height, in no cell."""
    grid = Grid(Axis(-1, 1, 6), Axis(-1, 1, 5))
    s = make_surface(tmp_path / "s.h5", grid, bowl, skip={0, 14}, override={22: np.inf})
    run_command("h52vtp.py", "--surf_file", str(tmp_path / "s.h5"), "--format", "vtp", "ply", cwd=tmp_path)
    points, arrays, quads = read_vtp(tmp_path / "s_train_loss.vtp")
    v = s.values["train_loss"].ravel()
    ok = np.isfinite(v)
    assert points.shape == (30, 3) and (~ok).sum() == 3
    np.testing.assert_array_equal(points[ok, 2], v[ok])
    assert np.isnan(points[~ok, 2]).all()
    np.testing.assert_array_equal(arrays["train_loss"], v)  # NaN and inf as in the file
    assert len(quads) == complete_quads(ok.reshape(5, 6)) == 20 - 9
    assert ok[quads].all()
    verts, faces = read_ply(tmp_path / "s_train_loss.ply")
    assert len(verts) == 27 and len(faces) == 2 * len(quads)
    np.testing.assert_array_equal(verts["z"], v[ok].astype(np.float32))


def test_zmax_clips_and_log_transforms_as_the_original(tmp_path):
    grid = Grid(Axis(-2, 2, 9), Axis(-2, 2, 9))
    s = make_surface(tmp_path / "s.h5", grid, lambda a, b: 3 * (a * a + b * b))
    v = s.values["train_loss"]
    mesh = prepare_mesh(s, zmax=10)
    np.testing.assert_array_equal(mesh.z, np.minimum(v, 10))
    assert v.max() > 10 and mesh.z.max() == 10 and mesh.z_name == "min(train_loss, 10)"
    mesh = prepare_mesh(s, log=True)
    np.testing.assert_allclose(mesh.z, np.log(v + 0.1), rtol=0, atol=0)
    assert prepare_mesh(s, zmax=0).z_name == "train_loss"  # <= 0: no clipping, as the original

    run_command("h52vtp.py", "--surf_file", str(tmp_path / "s.h5"), "--log", "--zmax", "10", cwd=tmp_path)
    points, arrays, quads = read_vtp(tmp_path / "s_train_loss_log_zmax10.vtp")
    height = np.log(np.minimum(v, 10) + 0.1).ravel()
    np.testing.assert_array_equal(points[:, 2], height)
    assert set(arrays) == {"train_loss", "log(min(train_loss, 10) + 0.1)"}
    np.testing.assert_array_equal(arrays["train_loss"], v.ravel())
    np.testing.assert_array_equal(arrays["log(min(train_loss, 10) + 0.1)"], height)
    assert len(quads) == 64


# ------------------------------------------------------------------------------------------------------------
# Interpolation
# ------------------------------------------------------------------------------------------------------------

def test_linear_interp_gives_n_by_n_points_through_the_nodes(tmp_path):
    grid = Grid(Axis(-1, 1, 5), Axis(-0.5, 1, 4))  # nodes every 3rd point in x and every 4th in y at N = 13
    s = make_surface(tmp_path / "s.h5", grid, lambda a, b: np.sin(3 * a) + b ** 3)
    run_command("h52vtp.py", "--surf_file", str(tmp_path / "s.h5"), "--interp", "13", "--interp_method", "linear",
                cwd=tmp_path)
    points, arrays, quads = read_vtp(tmp_path / "s_train_loss_interp13_linear.vtp")
    assert points.shape == (169, 3) and len(quads) == 144
    z = points[:, 2].reshape(13, 13)
    np.testing.assert_allclose(z[::4, ::3], s.values["train_loss"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(points[:, 0].reshape(13, 13)[0], np.linspace(-1, 1, 13))
    np.testing.assert_allclose(points[:, 1].reshape(13, 13)[:, 0], np.linspace(-0.5, 1, 13))


def test_cubic_interp_is_exact_for_a_quadratic_and_refuses_what_it_cannot_fit(tmp_path):
    s = make_surface(tmp_path / "s.h5", Grid(Axis(-1, 1, 6), Axis(-1, 2, 5)), bowl)
    x, y, z = resample(s.x, s.y, s.values["train_loss"], 21, method="cubic")
    X, Y = np.meshgrid(x, y)
    np.testing.assert_allclose(z, bowl(X, Y), atol=1e-10)  # a cubic spline reproduces (bi)quadratics
    assert prepare_mesh(s, interp=21).z.shape == (21, 21)
    holes = make_surface(tmp_path / "h.h5", Grid(Axis(-1, 1, 6), Axis(-1, 2, 5)), bowl, skip={7})
    with pytest.raises(SurfaceError, match="1 of 30 are NaN or inf; use --interp_method linear"):
        prepare_mesh(holes, interp=21)
    lin = prepare_mesh(holes, interp=21, interp_method="linear")
    assert np.isnan(lin.z).any() and np.isfinite(lin.z).sum() > 300  # only the cells around the hole
    small = make_surface(tmp_path / "t.h5", Grid(Axis(-1, 1, 3), Axis(-1, 1, 5)), bowl)
    with pytest.raises(SurfaceError, match="at least 4 points per axis"):
        prepare_mesh(small, interp=10)


# ------------------------------------------------------------------------------------------------------------
# PLY
# ------------------------------------------------------------------------------------------------------------

def test_ply_reads_back_with_colours(tmp_path):
    s = make_surface(tmp_path / "s.h5", Grid(Axis(-1, 1, 8), Axis(-1, 1, 6)), bowl)
    run_command("h52vtp.py", "--surf_file", str(tmp_path / "s.h5"), "--format", "ply", "--surf_name", "test_loss",
                "--output", str(tmp_path / "out"), cwd=tmp_path)
    verts, faces = read_ply(tmp_path / "out_test_loss.ply")
    X, Y = grid_points(s)
    assert len(verts) == 48 and len(faces) == 2 * 7 * 5
    np.testing.assert_array_equal(verts["x"], X.astype(np.float32))
    np.testing.assert_array_equal(verts["y"], Y.astype(np.float32))
    np.testing.assert_array_equal(verts["z"], s.values["test_loss"].ravel().astype(np.float32))
    assert faces.min() == 0 and faces.max() == 47
    rgb = np.column_stack([verts["r"], verts["g"], verts["b"]])
    assert len({tuple(c) for c in rgb}) > 20
    lo, hi = np.argmin(verts["z"]), np.argmax(verts["z"])
    assert rgb[lo].tolist() == [68, 1, 84] and rgb[hi].tolist() == [253, 231, 37]  # viridis ends
    # faces are counter-clockwise seen from +z (normals up, for printing and shading)
    p = np.column_stack([verts["x"], verts["y"]]).astype(float)
    a, b, c = p[faces[:, 0]], p[faces[:, 1]], p[faces[:, 2]]
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    assert (cross > 0).all()


# ------------------------------------------------------------------------------------------------------------
# The original's files, names, formats together
# ------------------------------------------------------------------------------------------------------------

def test_original_layout_exports_to_every_format(tmp_path):
    orig = tmp_path / "orig.h5"
    x = np.linspace(-1, 1, 11)
    X, Y = np.meshgrid(x, x)
    write_original_surface(orig, x, x, train_loss=X ** 2 + Y ** 2 + 0.2, train_acc=np.full((11, 11), 50.0))
    out = run_command("h52vtp.py", "--surf_file", str(orig), "--format", "vtp", "ply", "html", cwd=tmp_path)
    names = [ln.split()[-1] for ln in out.stdout.splitlines()]
    assert names == [str(tmp_path / f"orig_train_loss.{ext}") for ext in ("vtp", "ply", "html")]
    points, arrays, quads = read_vtp(tmp_path / "orig_train_loss.vtp")
    np.testing.assert_array_equal(points[:, 2], (X ** 2 + Y ** 2 + 0.2).ravel())
    assert len(quads) == 100 and len(read_ply(tmp_path / "orig_train_loss.ply")[1]) == 200


def test_output_names():
    assert output_stem("runs/s.h5") == "runs/s_train_loss"
    assert output_stem("runs/s.h5", surf_name="test_acc", log=True, zmax=10) == "runs/s_test_acc_log_zmax10"
    assert output_stem("s.h5", zmax=2.5, interp=200) == "s_train_loss_zmax2.5_interp200"
    assert output_stem("s.h5", interp=50, interp_method="linear", prefix="p/q") == "p/q_train_loss_interp50_linear"


def test_docstring_examples():
    result = doctest.testmod(surface_export)
    assert result.failed == 0 and result.attempted > 0


# ------------------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------------------

def test_html_is_self_contained(tmp_path):
    make_surface(tmp_path / "s.h5", Grid(Axis(-1, 1, 9), Axis(-1, 1, 9)), bowl)
    run_command("h52vtp.py", "--surf_file", str(tmp_path / "s.h5"), "--format", "html", "--log", cwd=tmp_path)
    page = (tmp_path / "s_train_loss_log.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page), "plotly.js must be embedded, not loaded"
    assert page.startswith("<!DOCTYPE html>") and "<title>s.h5: log(train_loss + 0.1)</title>" in page
    assert len(page) > 1_000_000 and "Plotly.newPlot" in page  # plotly.js itself is in the page
    assert "s.h5: log(train_loss + 0.1)" in page and "train_loss = %{customdata" in page


class DevToolsPipe:
    """The Chrome DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-separated JSON):
    needs nothing beyond the standard library, and reports console messages with their level (the
    stderr log marks every console message INFO, console.error included)."""

    def __init__(self, args: list[str], stderr_path: Path):
        cmd_r, self._cmd_w = os.pipe()
        self._evt_r, evt_w = os.pipe()

        def to_fds_3_and_4():  # in the child, before exec
            a, b = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(evt_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._stderr = open(stderr_path, "w")
        self.proc = subprocess.Popen([*args, "--remote-debugging-pipe"], close_fds=False, preexec_fn=to_fds_3_and_4,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)
        os.close(cmd_r)
        os.close(evt_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, timeout: float):
        end = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._evt_r], [], [], left)[0]:
                return None
            chunk = os.read(self._evt_r, 1 << 20)
            if not chunk:
                raise EOFError(f"chromium closed the pipe (exit status {self.proc.poll()})")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while (m := self._read(end - time.monotonic())) is not None:
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)
        raise TimeoutError(f"no answer to {method} in {timeout} s")

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (m := self._read(max(0.0, end - time.monotonic()))) is not None:
            self.events.append(m)

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description', d.get('text'))}")
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log error: {p['entry']['text']}")
        return out

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
            self.proc.wait(timeout=10)
        except Exception:  # the browser is going away either way; make sure it does
            self.proc.kill()
            self.proc.wait()
        finally:
            self._stderr.close()
            os.close(self._cmd_w)
            os.close(self._evt_r)


# swiftshader: WebGL in software, without a GPU or display; recent Chromium wants the opt-in flag for it.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                  "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1000,800"]

PLOT_STATE = """(() => {
  const g = document.querySelector('.js-plotly-plot');
  return JSON.stringify({plot: !!g, canvas: g ? g.querySelectorAll('canvas').length : 0,
                         drawn: !!(g && g._fullData && g._fullData.length && g._fullLayout.scene._scene),
                         text: document.body ? document.body.innerText : ''});
})()"""


HOVER_TEXT = "Array.from(document.querySelectorAll('.hovertext')).map(e => e.textContent).join('|')"
HOVER = re.compile(r"x = (\S+?)y = (\S+?)train_loss = (\S+?)log\(train_loss \+ 0\.1\) = (\S+)")


@pytest.mark.slow
def test_html_renders_in_headless_chromium(tmp_path):
    """The page opens offline without console errors and draws the surface with WebGL (a missing point
    included): plotly's container and canvas are there, no 'WebGL is not supported', the screenshot is
    coloured by the surface, not only by the colour bar, and hovering shows x, y, the loss and the height
    of one grid point (a non-square grid, so a transposed lookup would show)."""
    if not os.path.exists(CHROMIUM):
        skip_or_fail(f"{CHROMIUM} not found (apt-get install chromium)")
    s = make_surface(tmp_path / "s.h5", Grid(Axis(-1, 1, 25), Axis(-1, 1, 21)), bowl, skip={30})
    run_command("h52vtp.py", "--surf_file", str(tmp_path / "s.h5"), "--format", "html", "--log", cwd=tmp_path)
    page = tmp_path / "s_train_loss_log.html"
    browser = DevToolsPipe([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
                            "about:blank"], tmp_path / "chromium.log")
    hovers = []
    try:
        target = next(t for t in browser.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        sid = browser.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            browser.call(f"{domain}.enable", session=sid)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": 1000, "height": 800, "deviceScaleFactor": 1, "mobile": False}, session=sid)
        browser.call("Page.navigate", {"url": page.as_uri()}, session=sid)
        deadline, state = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            value = browser.call("Runtime.evaluate", {"expression": PLOT_STATE, "returnByValue": True},
                                 session=sid)["result"].get("value")
            state = json.loads(value) if value else {}
            if state.get("drawn") and state.get("canvas"):
                break
            time.sleep(0.2)
        browser.drain(1.0)  # let the first frames render and late messages arrive
        shot = tmp_path / "page.png"
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"},
                                                       session=sid)["data"]))
        for x, y in [(480, 450), (520, 400), (440, 500), (500, 350)]:  # inside the drawn surface
            browser.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=sid)
            browser.drain(0.4)
            hovers.append(browser.call("Runtime.evaluate", {"expression": HOVER_TEXT, "returnByValue": True},
                                       session=sid)["result"].get("value", ""))
        errors = browser.errors()
    finally:
        browser.close()
    assert not errors, errors
    assert state.get("plot") and state.get("canvas"), state
    assert "WebGL is not supported" not in state.get("text", ""), state["text"][:200]
    assert "s.h5: log(train_loss + 0.1)" in state["text"]
    rgb = mpimg.imread(shot)[..., :3]
    assert rgb.shape[:2] == (800, 1000)
    coloured = (rgb.max(-1) - rgb.min(-1)) > 60 / 255  # the grey/white page and axes are not saturated
    # the colour bar alone covers about 2 % of the page; a drawn surface several times that
    assert coloured.mean() > 0.05, f"only {coloured.mean():.1%} coloured pixels: is the surface drawn?"
    found = [HOVER.search(h.replace("\u2212", "-")) for h in hovers]
    assert any(found), hovers
    for m in filter(None, found):
        hx, hy, loss, height = (float(g) for g in m.groups())
        i, j = np.argmin(abs(s.x - hx)), np.argmin(abs(s.y - hy))
        np.testing.assert_allclose(loss, s.values["train_loss"][j, i], rtol=1e-5, err_msg=m.group(0))
        np.testing.assert_allclose(height, np.log(s.values["train_loss"][j, i] + 0.1), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------------

def test_bad_inputs_get_one_line(tmp_path):
    two = tmp_path / "two.h5"
    make_surface(two, Grid(Axis(-1, 1, 5), Axis(-1, 1, 5)), bowl, skip={3})
    one = tmp_path / "one.h5"
    make_surface(one, Grid(Axis(-1, 1, 5)), lambda a: a * a)
    cases = [
        (["--surf_file", str(tmp_path / "missing.h5")], "cannot read surface file"),
        (["--surf_file", str(two), "--surf_name", "nope"], "has no 'nope'; it has test_acc, test_loss, train_acc, "
                                                           "train_loss"),
        (["--surf_file", str(one)], "VTP/PLY/HTML export needs a 2D surface"),
        (["--surf_file", str(two), "--interp", "1"], "--interp must be at least 2"),
        (["--surf_file", str(two), "--interp", "0"], "--interp must be at least 2"),
        (["--surf_file", str(two), "--interp", "9"], "use --interp_method linear"),
        (["--surf_file", str(two), "--format", "obj"], "invalid choice: 'obj'"),
        (["--surf_file", str(two), "--output", str(tmp_path / "no" / "such")], "does not exist"),
    ]
    for args, message in cases:
        proc = run_command("h52vtp.py", *args, cwd=tmp_path, check=False)
        assert proc.returncode != 0, (args, proc.stdout)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        # argparse prints its usage lines first (exit status 2); ours is one line with status 1.
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
        assert len(lines) == 1, (args, proc.stderr)
        assert proc.returncode == (2 if "invalid choice" in message else 1), (args, proc.returncode)
    assert not list(tmp_path.glob("two_*")), "nothing written on errors"
