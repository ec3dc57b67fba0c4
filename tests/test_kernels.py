"""The seam to the fast kernels: differentiable layers equal PyTorch's, every private API has a working fallback."""

import pytest
import torch as th
from torch.nn import functional as F

from sb3_tom import kernels


@pytest.fixture(params=[True, False], ids=["fast", "kernels-off"])
def fast(request, monkeypatch):
    monkeypatch.setitem(kernels._enabled, "fast", request.param)
    return request.param


@pytest.fixture
def no_private_apis(monkeypatch):
    """A PyTorch build without any of the private APIs the kernels use: the probes' fallbacks must compute the same."""
    for name in kernels.AVAILABLE:
        monkeypatch.setitem(kernels.AVAILABLE, name, False)


def _has_onednn_op() -> bool:
    try:
        return th.backends.mkldnn.is_available() and hasattr(th.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


@pytest.mark.parametrize("onednn", [False, True], ids=["blas", "onednn"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(32, 17, 256), (256, 256, 256), (300, 256, 1), (8, 6, 3)])
def test_linear_matches_nn_linear(fast, onednn, relu, shape, monkeypatch):
    """
    Values and gradients (input, weight, bias) of kernels.linear equal F.linear's under autograd, on any path; the
    oneDNN path is forced where the op exists (it runs on AVX2 CPUs too, only slower), so every CPU tests it.
    """
    if onednn and not _has_onednn_op():
        pytest.skip("this PyTorch build has no oneDNN linear")
    monkeypatch.setitem(kernels.AVAILABLE, "onednn", onednn)
    monkeypatch.setitem(kernels._enabled, "onednn", True)
    batch, n_in, n_out = shape
    gen = th.Generator().manual_seed(batch + n_out)
    x = th.randn(batch, n_in, generator=gen, requires_grad=True)
    weight = (th.randn(n_out, n_in, generator=gen) / n_in**0.5).requires_grad_(True)
    bias = th.randn(n_out, generator=gen, requires_grad=True)
    assert kernels._use_onednn(x, weight) == (onednn and fast and min(n_in, n_out) >= 64 and batch >= 16)
    out = kernels.linear(x, weight, bias, relu=relu)
    expected = F.linear(x, weight, bias)
    expected = expected.relu() if relu else expected
    th.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    upstream = th.randn(out.shape, generator=gen)
    grads = th.autograd.grad(out, [x, weight, bias], upstream)
    expected_grads = th.autograd.grad(expected, [x, weight, bias], upstream)
    for got, want in zip(grads, expected_grads, strict=True):
        th.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_linear_gradcheck_and_no_grad():
    """The autograd Function passes gradcheck in float64; without autograd the forward runs alone."""
    x = th.randn(20, 7, dtype=th.float64, requires_grad=True)
    weight = th.randn(5, 7, dtype=th.float64, requires_grad=True)
    bias = th.randn(5, dtype=th.float64, requires_grad=True)
    assert th.autograd.gradcheck(lambda *args: kernels.linear(*args, relu=True), (x, weight, bias))
    with th.no_grad():
        out = kernels.linear(x, weight, bias)
    assert out.grad_fn is None and th.allclose(out, F.linear(x, weight, bias))


@pytest.mark.parametrize("private", [True, False], ids=["threshold_backward", "mask-product"])
def test_relu_backward_is_autograds_relu_gradient(fast, private, monkeypatch):
    """relu_backward gives autograd's ReLU gradient exactly on either path, zero where the output is exactly zero."""
    monkeypatch.setitem(kernels.AVAILABLE, "threshold_backward", private and kernels.AVAILABLE["threshold_backward"])
    gen = th.Generator().manual_seed(0)
    x = th.randn(512, 256, generator=gen)
    x[:, :8] = 0.0
    x.requires_grad_(True)
    out = x.relu()
    upstream = th.randn(out.shape, generator=gen)
    (expected,) = th.autograd.grad(out, x, upstream)
    got = kernels.relu_backward(upstream, out.detach())
    assert th.equal(got, expected) and bool((got[:, :8] == 0).all())


@pytest.mark.parametrize("members", [1, 5, 7])
def test_batched_linear_matches_baddbmm(fast, members):
    """An ensemble layer: values and gradients equal th.baddbmm's for any number of members (thread split or not)."""
    gen = th.Generator().manual_seed(members)
    x = th.randn(members, 64, 23, generator=gen, requires_grad=True)
    weight = th.randn(members, 23, 200, generator=gen, requires_grad=True)
    bias = th.randn(members, 1, 200, generator=gen, requires_grad=True)
    threads = th.get_num_threads()
    try:
        th.set_num_threads(2)
        out = kernels.batched_linear(x, weight, bias)
        expected = th.baddbmm(bias, x, weight)
        upstream = th.randn(out.shape, generator=gen)
        grads = th.autograd.grad(out, [x, weight, bias], upstream)
        expected_grads = th.autograd.grad(expected, [x, weight, bias], upstream)
    finally:
        th.set_num_threads(threads)
    th.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)
    for got, want in zip(grads, expected_grads, strict=True):
        th.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)
    xd, wd, bd = (t.detach().double().requires_grad_(True) for t in (x[:, :4, :3], weight[:, :3, :2], bias[:, :, :2]))
    assert th.autograd.gradcheck(kernels.batched_linear, (xd, wd, bd))


@pytest.mark.parametrize(
    "capability, vendor, setting, expected",
    [
        ("AVX512", "AuthenticAMD", None, True),  # AMD EPYC with AVX-512: oneDNN 1.40x faster than MKL there
        ("AVX512", "GenuineIntel", None, False),  # Intel Xeon with AVX-512: MKL 1.17-1.37x faster
        ("AVX2", "AuthenticAMD", None, False),  # AVX2 only: MKL faster
        ("AVX2", "GenuineIntel", None, False),
        ("NO AVX", "", None, False),
        ("AVX512", "", None, True),  # vendor unknown: the AVX-512 rule alone
        ("AVX512", "GenuineIntel", "1", True),  # SB3_TOM_ONEDNN=1 forces it on
        ("AVX2", "AuthenticAMD", "1", True),
        ("AVX512", "AuthenticAMD", "0", False),  # SB3_TOM_ONEDNN=0 forces it off
        ("AVX512", "AuthenticAMD", "auto", True),
    ],
)
def test_onednn_default_follows_the_cpu(capability, vendor, setting, expected):
    """oneDNN's matmul is chosen by default only where it was measured faster than the BLAS: AVX-512 CPUs not Intel's."""
    assert kernels.onednn_default(capability, vendor, setting) is expected


def test_onednn_setting_must_be_known():
    with pytest.raises(ValueError, match="SB3_TOM_ONEDNN"):
        kernels.onednn_default("AVX512", "AuthenticAMD", "yes")


def test_cpu_vendor_is_read(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert kernels.cpu_vendor(str(cpuinfo)) == "AuthenticAMD"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n")
    assert kernels.cpu_vendor(str(cpuinfo)) == "GenuineIntel"
    cpuinfo.write_text("processor\t: 0\nCPU implementer\t: 0x41\n")  # an Arm CPU
    assert kernels.cpu_vendor(str(cpuinfo)) == ""
    monkeypatch.setattr(kernels.platform, "processor", lambda: "Intel64 Family 6 Model 85 Stepping 7, GenuineIntel")
    assert kernels.cpu_vendor(str(tmp_path / "missing")) == "GenuineIntel"
    monkeypatch.setattr(kernels.platform, "processor", lambda: "arm")
    assert kernels.cpu_vendor(str(tmp_path / "missing")) == ""


def test_onednn_only_where_it_pays(monkeypatch):
    """oneDNN is used only where it is chosen and available, and never runs with the kernels off."""
    x, weight = th.randn(64, 256), th.randn(256, 256)
    monkeypatch.setitem(kernels._enabled, "fast", True)
    monkeypatch.setitem(kernels._enabled, "onednn", True)
    assert kernels._use_onednn(x, weight) == kernels.AVAILABLE["onednn"]
    assert kernels.fused_adam_usable([weight]) == kernels.AVAILABLE["fused_adam"]
    kernels.set_fast_kernels(False)
    assert not kernels._use_onednn(x, weight) and not kernels.fused_adam_usable([weight]) and not kernels.fast_kernels()
    kernels.set_fast_kernels(True, onednn=False)
    assert not kernels._use_onednn(x, weight) and kernels.fast_kernels() and not kernels.onednn_enabled()


def _adam_run(optimizer_class, use_kernel: bool, **options) -> list[th.Tensor]:
    gen = th.Generator().manual_seed(0)
    params = [th.randn(8, 4, generator=gen, requires_grad=True), th.randn(4, generator=gen, requires_grad=True)]
    optimizer = optimizer_class(params, lr=1e-2, **options)
    kernel = kernels.AdamKernel(optimizer, params)
    for _ in range(5):
        grads = [th.randn(p.shape, generator=gen) for p in params]
        if use_kernel:
            kernel.step(grads)
        else:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("optimizer_class, options", [(th.optim.Adam, {"weight_decay": 1e-2}), (th.optim.AdamW, {})])
def test_adam_kernel_matches_optimizer_step(fast, optimizer_class, options):
    """AdamKernel (the fused kernel called directly, or optimizer.step() with the kernels off) is Adam's update."""
    for got, want in zip(
        _adam_run(optimizer_class, True, **options), _adam_run(optimizer_class, False, **options), strict=True
    ):
        th.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_fallbacks_without_private_apis(no_private_apis):
    """Without the private APIs every kernel still computes the same: F.linear, optimizer.step(), plain loops."""
    for got, want in zip(_adam_run(th.optim.Adam, True), _adam_run(th.optim.Adam, False), strict=True):
        th.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    x, weight = th.randn(64, 256), th.randn(256, 256)
    assert not kernels._use_onednn(x, weight)
    th.testing.assert_close(kernels.linear(x, weight), F.linear(x, weight))
    targets, sources = [th.ones(3), th.zeros(2)], [th.zeros(3), th.ones(2)]
    kernels.polyak_update(targets, sources, 0.25)
    th.testing.assert_close(targets[0], th.full((3,), 0.75))
    th.testing.assert_close(targets[1], th.full((2,), 0.25))


def test_polyak_update_matches_sb3(fast):
    from stable_baselines3.common.utils import polyak_update

    gen = th.Generator().manual_seed(1)
    sources = [th.randn(5, 3, generator=gen), th.randn(3, generator=gen)]
    targets = [th.randn(5, 3, generator=gen), th.randn(3, generator=gen)]
    expected = [t.clone() for t in targets]
    polyak_update(sources, expected, 0.005)
    kernels.polyak_update(targets, sources, 0.005)
    for got, want in zip(targets, expected, strict=True):
        th.testing.assert_close(got, want)
