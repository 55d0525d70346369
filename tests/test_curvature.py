"""curvature.py against a dense float64 Hessian of the mean loss (torch.autograd.functional.hessian over
torch.func.functional_call) on networks of a few hundred parameters, and exact identities of the solvers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loss_landscape.curvature.hessian import PARAM_FILTERS, HessianOperator
from loss_landscape.errors import CurvatureError
from loss_landscape.curvature.solvers import bottom_eigenpairs, extreme_eigenvalues, top_eigenpairs
from loss_landscape.curvature.spectrum import density_curve, hutchinson_trace, lla_criteria, slq_density
from loss_landscape.evaluation import DeviceSplit


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 4))  # 160 parameters


def bn_net() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(8, 10), nn.BatchNorm1d(10), nn.Tanh(), nn.Linear(10, 3))  # 143 parameters
    bn = net[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return net


def make_data(classes: int, n: int = 60, seed: int = 0) -> DeviceSplit:
    g = torch.Generator().manual_seed(seed)
    return DeviceSplit(torch.randn(n, 8, generator=g), torch.randint(0, classes, (n,), generator=g))


def dense_hessian(model: nn.Module, data: DeviceSplit, loss_name: str = "crossentropy",
                  params: str = "all") -> np.ndarray:
    """The reference: float64 Hessian of the mean loss over all of `data`, model in eval mode."""
    m = copy.deepcopy(model).double().eval()
    named = dict(m.named_parameters())
    buffers = dict(m.named_buffers())
    sel = [k for k, p in named.items() if params == "all" or p.dim() > 1]
    fixed = {k: p.detach() for k, p in named.items() if k not in sel}
    x, y = data.inputs.double(), data.targets

    def loss(flat):
        state, start = dict(fixed), 0
        for k in sel:
            size = named[k].numel()
            state[k] = flat[start:start + size].view_as(named[k])
            start += size
        out = torch.func.functional_call(m, {**state, **buffers}, (x,))
        if loss_name == "crossentropy":
            return F.cross_entropy(out, y)
        return ((F.softmax(out, 1) - F.one_hot(y, out.shape[1]).double()) ** 2).mean()

    flat0 = torch.cat([named[k].detach().reshape(-1) for k in sel])
    return torch.autograd.functional.hessian(loss, flat0).numpy()


@pytest.fixture(scope="module")
def mlp_case():
    net, data = mlp(), make_data(4)
    return net, data, dense_hessian(net, data)


@pytest.fixture(scope="module")
def bn_case():
    net, data = bn_net(), make_data(3, seed=1)
    return net, data, dense_hessian(net, data)


@pytest.mark.parametrize("case", ["mlp_case", "bn_case"])
def test_matvec_matches_dense_hessian(case, request):
    net, data, H = request.getfixturevalue(case)
    v = np.random.default_rng(0).standard_normal(H.shape[0])
    op64 = HessianOperator(net, data, batch_size=7, dtype=torch.float64)
    hv = op64.matvec(torch.from_numpy(v))
    assert hv.dtype == torch.float64 and op64.matvecs == 1
    np.testing.assert_allclose(hv.numpy(), H @ v, rtol=0, atol=1e-10 * np.abs(H @ v).max())
    op32 = HessianOperator(net, data, batch_size=16)
    hv32 = op32.matvec(torch.from_numpy(v).float())
    assert hv32.dtype == torch.float32
    assert np.linalg.norm(hv32.double().numpy() - H @ v) <= 1e-5 * np.linalg.norm(H @ v)
    assert not net.training  # eval mode: BN uses running statistics
    assert next(net.parameters()).dtype == torch.float32  # the float64 operator worked on a copy


def test_gradient_and_linear_operator(mlp_case):
    net, data, H = mlp_case
    op = HessianOperator(net, data, batch_size=9, dtype=torch.float64)
    value, grad = op.value_and_gradient()
    m = copy.deepcopy(net).double()
    loss = F.cross_entropy(m(data.inputs.double()), data.targets)
    ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(m.parameters()))])
    assert value == pytest.approx(loss.item(), rel=1e-12)
    np.testing.assert_allclose(op.gradient().numpy(), ref.numpy(), atol=1e-12)
    lin = op.as_linear_operator()
    x = np.random.default_rng(3).standard_normal(op.dim)
    assert lin.shape == (op.dim, op.dim) and lin.dtype == np.float64
    np.testing.assert_allclose(lin.matvec(x), H @ x, atol=1e-10 * np.abs(H @ x).max())
    parts = op.unflatten(torch.arange(op.dim, dtype=torch.float64))
    assert [p.shape for p in parts] == [p.shape for p in op.params]


@pytest.mark.parametrize("case", ["mlp_case", "bn_case"])
def test_top_and_bottom_eigenpairs(case, request):
    net, data, H = request.getfixturevalue(case)
    exact = np.linalg.eigvalsh(H)
    op = HessianOperator(net, data, batch_size=20)
    top = top_eigenpairs(op, k=2, tol=1e-6, seed=0)
    np.testing.assert_allclose(top.values, exact[::-1][:2], rtol=1e-3)
    assert top.vectors.shape == (2, op.dim) and top.which == "LA" and top.tol == 1e-6
    np.testing.assert_allclose(np.linalg.norm(top.vectors, axis=1), 1.0, atol=1e-12)
    assert top.matvecs > 0 and top.iterations == top.matvecs
    for lam, u in zip(top.values, top.vectors):  # eigenpairs of the exact Hessian
        assert np.linalg.norm(H @ u - lam * u) < 1e-3 * abs(exact).max()
    assert np.all(top.residuals < 1e-3 * abs(exact).max())
    bottom = bottom_eigenpairs(op, k=1, tol=1e-6, seed=0)
    assert bottom.values[0] == pytest.approx(exact[0], rel=1e-3, abs=1e-6 * abs(exact).max())
    assert np.linalg.norm(H @ bottom.vectors[0] - bottom.values[0] * bottom.vectors[0]) < 1e-3 * abs(exact).max()
    again = top_eigenpairs(op, k=2, tol=1e-6, seed=0)
    np.testing.assert_array_equal(again.values, top.values)  # deterministic for a seed


@pytest.mark.parametrize("case", ["mlp_case", "bn_case"])
def test_extreme_eigenvalues(case, request):
    net, data, H = request.getfixturevalue(case)
    exact = np.linalg.eigvalsh(H)
    op = HessianOperator(net, data, dtype=torch.float64)
    lmax, lmin = extreme_eigenvalues(op, tol=1e-6, seed=3)
    assert lmax == pytest.approx(exact[-1], rel=1e-4)
    assert abs(lmin - exact[0]) <= 1e-4 * abs(exact).max()
    assert op.matvecs < H.shape[0]  # cheaper than the dense matrix
    assert extreme_eigenvalues(op, tol=1e-6, seed=3) == (lmax, lmin)


def test_hutchinson_trace(mlp_case):
    net, data, H = mlp_case
    op = HessianOperator(net, data, dtype=torch.float64)
    res = hutchinson_trace(op, samples=30, seed=0)
    exact = np.trace(H)
    assert res.samples == 30 and res.estimates.shape == (30,) and res.stderr > 0
    assert res.stderr == pytest.approx(res.estimates.std(ddof=1) / np.sqrt(30))
    assert abs(res.trace - exact) < 4 * res.stderr
    # Many probes on the dense matrix (cheap): the estimate closes in on the trace.
    many = hutchinson_trace(H, samples=20000, seed=1)
    assert abs(many.trace - exact) < 4 * many.stderr and many.stderr < 0.1 * res.stderr


def test_slq_moments_are_exact(mlp_case):
    net, data, H = mlp_case
    op = HessianOperator(net, data, dtype=torch.float64)
    res = slq_density(op, runs=3, steps=12, seed=5)
    assert res.nodes.shape == res.weights.shape == (3, 12) and res.dim == H.shape[0]
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)
    # Gauss quadrature of T_m reproduces z^T H z / dim and ||H z||^2 / dim exactly.
    probes = hutchinson_trace(H, samples=3, seed=5).estimates
    np.testing.assert_allclose(H.shape[0] * (res.weights * res.nodes).sum(axis=1), probes, rtol=1e-9)
    rng = np.random.default_rng(5)
    for r in range(3):
        z = rng.integers(0, 2, size=H.shape[0]) * 2.0 - 1
        second = H.shape[0] * (res.weights[r] * res.nodes[r] ** 2).sum()
        assert second == pytest.approx(np.sum((H @ z) ** 2), rel=1e-9)
    exact = np.linalg.eigvalsh(H)
    assert res.nodes.max() <= exact[-1] * (1 + 1e-9) and res.nodes.min() >= exact[0] - 1e-9 * exact[-1]
    grid = np.linspace(exact[0] - 1, exact[-1] + 1, 4001)
    curve = density_curve(res, grid, sigma=0.05)
    assert np.trapezoid(curve, grid) == pytest.approx(1.0, abs=1e-3) and curve.min() >= 0


def test_slq_and_lla_exact_when_steps_reach_dim():
    rng = np.random.default_rng(0)
    dim = 30
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    lam = np.concatenate([np.linspace(-2.0, -0.1, 8), np.linspace(0.05, 10.0, 22)])
    A = (q * lam) @ q.T
    res = slq_density(A, runs=2, steps=100, seed=7)
    assert res.steps == dim
    probe_rng = np.random.default_rng(7)
    re_runs, khn_runs = [], []
    for r in range(2):
        np.testing.assert_allclose(res.nodes[r], lam, atol=1e-9)
        z = probe_rng.integers(0, 2, size=dim) * 2.0 - 1
        w = (q.T @ z) ** 2 / dim  # the spectral measure of the probe
        np.testing.assert_allclose(res.weights[r], w, atol=1e-9)
        mass = np.abs(lam * w) ** 0.5
        khn_runs.append(mass[lam < 0].sum() / mass[lam > 0].sum())
        re_runs.append(2.0 / 10.0)
    crit = lla_criteria(res, n=0.5)
    assert crit["n"] == 0.5
    assert crit["re"] == pytest.approx(0.2, rel=1e-9)
    assert crit["khn"] == pytest.approx(np.mean(khn_runs), rel=1e-8)
    np.testing.assert_allclose(crit["khn_runs"], khn_runs, rtol=1e-8)
    assert lla_criteria(slq_density(np.diag([1.0, 2.0, 3.0]), runs=1, steps=3))["khn"] == 0.0  # convex


def test_eigenvalues_do_not_depend_on_batch_size(bn_case):
    net, data, _ = bn_case
    values = [top_eigenpairs(HessianOperator(net, data, batch_size=b), k=2, tol=1e-8).values
              for b in (7, 16, len(data))]
    for v in values[1:]:
        np.testing.assert_allclose(v, values[0], rtol=1e-5)


def test_dim_filter_is_the_restricted_hessian(bn_case):
    net, data, _ = bn_case
    H = dense_hessian(net, data, params="dim>1")
    op = HessianOperator(net, data, params="dim>1", dtype=torch.float64)
    assert op.param_names == ["0.weight", "3.weight"] and op.dim == 8 * 10 + 10 * 3 == H.shape[0]
    v = np.random.default_rng(1).standard_normal(op.dim)
    np.testing.assert_allclose(op.matvec(torch.from_numpy(v)).numpy(), H @ v, atol=1e-10 * np.abs(H @ v).max())
    lmax = top_eigenpairs(op, tol=1e-8).values[0]
    assert lmax == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-6)


def test_mse_loss(mlp_case):
    net, data, _ = mlp_case
    H = dense_hessian(net, data, loss_name="mse")
    op = HessianOperator(net, data, loss_name="mse", batch_size=11, dtype=torch.float64)
    v = np.random.default_rng(2).standard_normal(op.dim)
    np.testing.assert_allclose(op.matvec(torch.from_numpy(v)).numpy(), H @ v, atol=1e-10 * np.abs(H @ v).max())
    assert top_eigenpairs(op, tol=1e-8).values[0] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-6)


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_bad_inputs_raise_one_line_errors():
    net, data = mlp(), make_data(4, n=10)
    op = HessianOperator(net, data)
    with pytest.raises(CurvatureError) as e:
        top_eigenpairs(op, k=op.dim)
    assert "k must be" in _one_line(e) and str(op.dim) in str(e.value)
    with pytest.raises(CurvatureError) as e:
        bottom_eigenpairs(op, k=0)
    _one_line(e)
    with pytest.raises(CurvatureError) as e:
        HessianOperator(net, DeviceSplit(data.inputs[:0], data.targets[:0]))
    assert "empty" in _one_line(e)
    with pytest.raises(CurvatureError) as e:
        HessianOperator(net, data, params="biases")
    assert all(f in _one_line(e) for f in PARAM_FILTERS)
    with pytest.raises(CurvatureError) as e:
        HessianOperator(net, data, loss_name="hinge")
    _one_line(e)
    with pytest.raises(CurvatureError) as e:
        HessianOperator(net, data, batch_size=0)
    _one_line(e)
    with pytest.raises(CurvatureError) as e:
        op.matvec(torch.zeros(op.dim + 1))
    _one_line(e)
    with pytest.raises(CurvatureError) as e:
        hutchinson_trace(op, samples=0)
    _one_line(e)
    with pytest.raises(CurvatureError) as e:
        top_eigenpairs(op, k=3, tol=1e-12, maxiter=5)
    assert "maxiter" in _one_line(e)
    with pytest.raises(CurvatureError) as e:
        extreme_eigenvalues(op, tol=1e-12, maxiter=3)
    assert "maxiter" in _one_line(e)
    with pytest.raises(CurvatureError) as e:
        density_curve(slq_density(np.eye(2), runs=1, steps=2), np.zeros(3), sigma=0)
    _one_line(e)


def _recorder_case():
    from test_evaluation import FlagRecorder, data
    x, y = data(n=40)
    return FlagRecorder(), DeviceSplit(x, y)


def test_hessian_products_run_in_strict_fp32_whatever_the_global_flags():
    """TF32 is torch's default for cuDNN convolutions: on a GPU every product would run in it unless the
    operator turns it off. The flags in force inside the forward passes are read (on a CPU too)."""
    from test_evaluation import STRICT, tf32_globals
    model, data = _recorder_case()
    with tf32_globals():
        op = HessianOperator(model, data, batch_size=16)
        op.matvec(torch.ones(op.dim))
        assert model.take() == {STRICT}
        op.value_and_gradient()
        assert model.take() == {STRICT}
        op.as_linear_operator().matvec(np.ones(op.dim))
        assert model.take() == {STRICT}


def test_spectrum_functions_run_in_strict_fp32():
    """What plot_hessian_spectrum.py computes, each through the operator it builds (precision fp32)."""
    from test_evaluation import STRICT, tf32_globals
    model, data = _recorder_case()
    op = HessianOperator(model, data, batch_size=16, precision="fp32")
    calls = {"value_and_gradient": op.value_and_gradient,
             "top_eigenpairs": lambda: top_eigenpairs(op, k=2, tol=1e-3, seed=0),
             "extreme_eigenvalues": lambda: extreme_eigenvalues(op, tol=1e-3, seed=0),
             "hutchinson_trace": lambda: hutchinson_trace(op, samples=2, seed=0),
             "slq_density": lambda: slq_density(op, runs=1, steps=5, seed=0)}
    for name, call in calls.items():
        with tf32_globals():
            call()
        assert model.take() == {STRICT}, name


def test_hessian_directions_run_in_strict_fp32():
    """--axes hessian: the eigenvectors come from products in strict fp32."""
    import json

    from loss_landscape.directions.spec import DirectionSpec
    from loss_landscape.directions.make import hessian_directions
    from test_evaluation import STRICT, tf32_globals
    model, data = _recorder_case()
    spec = DirectionSpec(kind="hessian", two_d=True, xnorm="", xignore="",
                         details=json.dumps({"params": "all", "tol": 1e-3, "seed": 0, "batch_size": 16}))
    with tf32_globals():
        dirs = hessian_directions(model, spec, data)
    assert model.take() == {STRICT} and dirs.y is not None


def test_tf32_is_an_opt_in_and_bf16_is_refused():
    from test_evaluation import TF32, tf32_globals
    model, data = _recorder_case()
    op = HessianOperator(model, data, precision="tf32")
    with tf32_globals():
        op.matvec(torch.ones(op.dim))
    assert model.take() == {TF32}
    with pytest.raises(CurvatureError) as e:
        HessianOperator(model, data, precision="bf16")
    assert "fp32 or tf32" in _one_line(e)
