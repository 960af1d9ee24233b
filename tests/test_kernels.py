"""The fused CPU kernel against a plain torch reference of aihwkit's IO-managed MVM."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from hwsim.engine import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="no C compiler")


def io(nm="abs_max", inp_step=2 / 126, out_step=24 / 510, out_noise=0.0, inp_bound=1.0,
       out_bound=12.0):
    return kernels.KernelIO(
        noise_management=nm, inp_step=inp_step, inp_bound=inp_bound or math.inf,
        clamp_input=not (nm == "abs_max" and inp_bound >= 1.0), out_step=out_step,
        out_bound=out_bound or math.inf, out_noise=out_noise)


def reference(x, channels, kernel, stride, padding, w, scale, bias, kio, reduction, noise=0.0):
    """aihwkit's AnalogMVM on F.unfold rows, every output-noise draw ``noise``."""
    n, c, h, wd = x.shape
    c0, c1 = channels
    cols = F.unfold(x[:, c0:c1], kernel, padding=padding, stride=stride)  # (n, c*kh*kw, L)
    kh, kw = kernel
    rows = cols.view(n, c1 - c0, kh, kw, -1).permute(0, 4, 2, 3, 1).reshape(-1, (c1 - c0) * kh * kw)
    if kio.noise_management == "abs_max":
        nm = rows.abs().amax(1, keepdim=True)
    elif kio.noise_management == "max":
        nm = rows.amax(1, keepdim=True)
    else:
        nm = torch.ones(len(rows), 1)
    nm = torch.where(nm > 0, nm, torch.ones_like(nm)) * reduction
    inp_step, out_step = kio.inp_step or 1.0, kio.out_step or 1.0
    q = rows * (1.0 / (nm * inp_step))
    if kio.inp_step:
        q = q.round()
    q = q.clamp(-kio.inp_bound / inp_step, kio.inp_bound / inp_step)
    z = q @ w + kio.out_noise / out_step * noise
    if kio.out_step:
        z = z.round()
    clipped = bool((z.abs() * out_step > kio.out_bound).any())
    z = z.clamp(-kio.out_bound / out_step, kio.out_bound / out_step)
    unit = nm * (kio.out_step or 1.0) * scale  # one ADC level of each output
    return z * unit + bias, clipped, unit


def run(x, channels, kernel, stride, padding, w, scale, bias, kio, reduction=1.0, seed=1,
        noise=None, redo=False, post=None):
    tile = kernels.pack_tile(w, scale * (kio.out_step or 1.0), bias)
    xn = x.permute(0, 2, 3, 1).contiguous()
    n, _, h, wd = x.shape
    ho = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    wo = (wd + 2 * padding[1] - kernel[1]) // stride[1] + 1
    out = torch.empty(n * ho * wo, w.shape[1])
    if noise is not None:
        noise = torch.full(out.shape, noise)
    clipped, nonzero = kernels.mvm(xn, channels, kernel, stride, padding, tile, kio,
                                   reduction, out, seed, redo_if_clipped=redo, noise=noise,
                                   post=post)
    return out, clipped, nonzero


GEOMETRIES = {
    "3x3-pad1": ((0, 5), (3, 3), (1, 1), (1, 1)),
    "3x3-stride2": ((0, 5), (3, 3), (2, 2), (1, 1)),
    "1x1-stride2": ((0, 5), (1, 1), (2, 2), (0, 0)),
    "channel-slice": ((2, 5), (3, 3), (1, 1), (1, 1)),
    "5x3-nopad": ((0, 5), (5, 3), (1, 2), (0, 0)),
}
SETTINGS = {
    "pcm": {},
    "max-nm": {"nm": "max"},
    "no-nm-small-bound": {"nm": "none", "inp_bound": 0.5},
    "no-quantisation": {"inp_step": 0.0, "out_step": 0.0},
    "tight-out-bound": {"out_bound": 0.5},
    "fixed-noise": {"out_noise": 0.06},  # every draw replaced by a constant
}
NOISE = 0.8125


@pytest.mark.parametrize("setting", list(SETTINGS), ids=list(SETTINGS))
@pytest.mark.parametrize("geometry", list(GEOMETRIES), ids=list(GEOMETRIES))
def test_kernel_matches_reference(geometry, setting):
    torch.manual_seed(0)
    channels, kernel, stride, padding = GEOMETRIES[geometry]
    x = torch.randn(3, 6, 9, 10)
    k = (channels[1] - channels[0]) * kernel[0] * kernel[1]
    n_out = 21  # two column blocks, the second partial
    w = torch.randn(k, n_out) / math.sqrt(k)
    scale, bias = torch.rand(n_out) + 0.5, torch.randn(n_out)
    kio = io(**SETTINGS[setting])
    for reduction in (1.0, 4.0):
        noise = NOISE if kio.out_noise else None
        ref, ref_clipped, unit = reference(x, channels, kernel, stride, padding, w, scale,
                                           bias, kio, reduction, noise or 0.0)
        got, clipped, nonzero = run(x, channels, kernel, stride, padding, w, scale, bias,
                                    kio, reduction, noise=noise)
        assert nonzero and clipped == ref_clipped
        # same arithmetic, another summation order: a value at a rounding boundary may land
        # on the neighbouring level, nothing more
        close = torch.isclose(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max())
        levels = ((got - ref) / unit).abs()
        if kio.inp_step or kio.out_step:
            assert close.float().mean() > 0.99 and levels.max() <= 2.0
        else:
            assert close.all()


def test_all_zero_input_reports_no_nonzero_row():
    x = torch.zeros(2, 4, 5, 5)
    w = torch.randn(36, 3)
    _, _, nonzero = run(x, (0, 4), (3, 3), (1, 1), (1, 1), w, torch.ones(3), None, io())
    assert not nonzero


def test_stop_on_clip_reports_the_clip():
    torch.manual_seed(0)
    x = torch.randn(4, 4, 8, 8)
    w = torch.randn(36, 16)
    for redo in (False, True):
        _, clipped, _ = run(x, (0, 4), (3, 3), (1, 1), (1, 1), w, torch.ones(16), None,
                            io(out_bound=0.05), redo=redo)
        assert clipped


def test_output_noise_is_gaussian_and_seeded():
    # zero weights: the output is the ADC-rounded noise alone (no output quantisation here)
    x = torch.rand(50, 2, 16, 16) + 0.1
    w = torch.zeros(18, 16)
    kio = io(out_noise=0.06, out_step=0.0, out_bound=0.0)
    a, _, _ = run(x, (0, 2), (3, 3), (1, 1), (1, 1), w, torch.ones(16), None, kio, seed=7)
    b, _, _ = run(x, (0, 2), (3, 3), (1, 1), (1, 1), w, torch.ones(16), None, kio, seed=7)
    c, _, _ = run(x, (0, 2), (3, 3), (1, 1), (1, 1), w, torch.ones(16), None, kio, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # rescaled by each row's abs-max: undo it to get the standard normals back
    nm = F.max_pool2d(x.abs().amax(1, keepdim=True), 3, 1, 1).permute(0, 2, 3, 1).reshape(-1, 1)
    z = (a / (nm * 0.06)).flatten().double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01


def test_noise_does_not_depend_on_thread_count():
    x = torch.rand(8, 3, 12, 12)
    w = torch.randn(27, 16) * 0.1
    kio = io(out_noise=0.06)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _, _ = run(x, (0, 3), (3, 3), (1, 1), (1, 1), w, torch.ones(16), None, kio)
        torch.set_num_threads(max(2, threads))
        many, _, _ = run(x, (0, 3), (3, 3), (1, 1), (1, 1), w, torch.ones(16), None, kio)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_normal_stream():
    z = kernels.normals(0, 1 << 20, 12345).double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 0.005 and abs(z.var() - 1) < 0.005
    assert torch.equal(kernels.normals(4096, 1024, 12345),
                       torch.from_numpy(z[4096:5120]).float())


def test_half_level_maximum_rounds_as_aihwkit():
    # after one bound-management halving a row's abs-max lands on 31.5 DAC levels: which
    # way it rounds follows aihwkit's float arithmetic, in every row
    torch.manual_seed(3)
    v = torch.rand(4096) * 10 + 1e-3
    x = v.view(-1, 1, 1, 1)  # rows of one element: the element is the row's abs-max
    kio = io(out_step=0.0, out_bound=0.0)
    w = torch.ones(1, 1)
    got, _, _ = run(x, (0, 1), (1, 1), (1, 1), (0, 0), w, torch.ones(1), None, kio,
                    reduction=2.0)
    levels = got.flatten() / (v * 2.0)
    want = torch.round(v * (v.reciprocal() / 2.0) / kio.inp_step)  # aihwkit's order
    assert torch.equal(levels.round(), want)
    assert (want == 31).any() or (want == 32).any()


@pytest.fixture(scope="module")
def eight_wide(tmp_path_factory):
    """The kernel built with 8-float vectors (``-DHWSIM_VEC8``), beside the library the
    engine loads (16-float vectors where the machine has AVX-512, else 8 as well)."""
    out = tmp_path_factory.mktemp("vec8") / "mvm8.so"
    proc = kernels.compile_library(kernels._compiler(), [*kernels.FLAG_SETS[0], "-DHWSIM_VEC8"],
                                   out)
    if proc.returncode:
        pytest.skip("the 8-wide build needs the native flags")
    return kernels.load(out)


def _random_problem(rng):
    """A generated kernel call: geometry, channel slice, column count (partial blocks, one
    and several), input sign and scale, every IO setting, bound-management reduction."""
    while True:
        n, h, w, c = rng.randint(1, 3), rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 40)
        c0 = rng.randint(0, c - 1)
        c1 = rng.randint(c0 + 1, c)
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        ph, pw = rng.randint(0, kh - 1), rng.randint(0, kw - 1)
        if h + 2 * ph >= kh and w + 2 * pw >= kw:
            break
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(rng.getrandbits(32)))
    x = x * rng.choice([0.01, 1.0, 5.0])
    if rng.random() < 0.3:
        x = x.relu()
    n_out = rng.choice([1, 15, 16, 17, 31, 32, 33, 48, 64, 70])
    k = (c1 - c0) * kh * kw
    wt = torch.randn(k, n_out) * rng.choice([0.1, 1.0, 10.0])
    kio = kernels.KernelIO(
        noise_management=rng.choice(["none", "abs_max", "max"]),
        inp_step=rng.choice([0.0, 1 / 126, 1 / 254, 0.1]),
        inp_bound=rng.choice([1.0, math.inf]), clamp_input=rng.random() < 0.5,
        out_step=rng.choice([0.0, 1 / 510, 0.05]), out_bound=rng.choice([12.0, 1.0, math.inf]),
        out_noise=rng.choice([0.0, 0.06, 1.0]))
    return (x, (c0, c1), (kh, kw), stride, (ph, pw), wt, torch.rand(n_out) + 0.5,
            torch.randn(n_out) if rng.random() < 0.5 else None, kio,
            rng.choice([1.0, 0.5, 0.25]), rng.getrandbits(63))


def test_vector_widths_give_the_same_bits(eight_wide, monkeypatch):
    """Every output is computed lane by lane in the same order at either vector width, and
    the 16-lane noise is the 8-lane stream: the same bits, over generated calls."""
    import random

    native = kernels.library()
    rng = random.Random(0)
    for case in range(120):
        problem = _random_problem(rng)
        results = []
        for lib in (native, eight_wide):
            monkeypatch.setattr(kernels, "library", lambda lib=lib: lib)
            out, clipped, nonzero = run(*problem[:-1], seed=problem[-1])
            results.append((out.view(torch.int32), clipped, nonzero))
        (a, *fa), (b, *fb) = results
        assert fa == fb and torch.equal(a, b), case
    for first, n in [(0, 32), (32, 96), (96, 32 * 7), (rng.randrange(1 << 20) * 32, 32 * 33),
                     ((2**29 - 3) * 32, 32 * 7)]:  # around the counter's 32-bit wrap
        got = []
        for lib in (native, eight_wide):
            z = torch.empty(n)
            lib.hwsim_normals(z.data_ptr(), first, n, 12345)
            got.append(z.view(torch.int32))
        assert torch.equal(*got), (first, n)


def _random_bn(rng, c: int) -> torch.nn.BatchNorm2d:
    gen = torch.Generator().manual_seed(rng.getrandbits(32))
    bn = torch.nn.BatchNorm2d(c, affine=rng.random() < 0.8).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=gen) * rng.choice([0.01, 1.0, 30.0]))
        bn.running_var.copy_(torch.rand(c, generator=gen) ** 4 * rng.choice([1e-6, 1.0, 100.0]))
        if bn.affine:
            bn.weight.copy_(torch.randn(c, generator=gen))
            bn.bias.copy_(torch.randn(c, generator=gen))
    bn.eps = rng.choice([1e-5, 1e-3, 0.1])
    return bn


def test_absorbed_bn_is_torchs_bn_of_the_output(eight_wide, monkeypatch):
    """With ``post`` (an absorbed eval-mode BN) the kernel writes torch's BatchNorm2d of the
    outputs it writes without, bit for bit, at both vector widths: generated calls (geometry,
    columns, every IO setting, bound-management passes) and BN statistics (tiny and large
    variances, eps, with and without affine)."""
    import random

    native = kernels.library()
    rng = random.Random(1)
    for case in range(80):
        problem = _random_problem(rng)
        x, (_, _), kernel, stride, padding, wt = problem[:6]
        n, _, h, w = x.shape
        ho = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
        wo = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
        n_out = wt.shape[1]
        bn = _random_bn(rng, n_out)
        post = kernels.bn_affine(bn, -(-n_out // kernels.COLS) * kernels.COLS)
        for lib in (native, eight_wide):
            monkeypatch.setattr(kernels, "library", lambda lib=lib: lib)
            plain, *flags = run(*problem[:-1], seed=problem[-1])
            ref = bn(plain.view(n, ho, wo, n_out).permute(0, 3, 1, 2))  # channels-last memory
            got, *flags_post = run(*problem[:-1], seed=problem[-1], post=post)
            assert flags == flags_post, case
            assert torch.equal(got.view(n, ho, wo, n_out).permute(0, 3, 1, 2).view(torch.int32),
                               ref.view(torch.int32)), case


@pytest.mark.parametrize("c", [1, 3, 15, 16, 17, 31, 33, 64, 70])
@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (8, 8)])
def test_affine_is_torchs_eval_batchnorm(c, hw):
    """The BN affine the kernel applies, on channel-last maps of every shape class (vector
    tails, 1x1 maps, which torch normalises with its contiguous kernel)."""
    import random

    rng = random.Random(c * 100 + hw[0])
    bn = _random_bn(rng, c)
    x = torch.randn(4, *hw, c) * 3
    with torch.no_grad():
        ref = bn(x.permute(0, 3, 1, 2))
    scale, shift = kernels.bn_affine(bn, c)
    assert torch.equal(kernels.affine(x, scale, shift).permute(0, 3, 1, 2), ref)


def test_the_bn_check_fails_where_torch_rounds_twice(monkeypatch):
    """kernels.bn_matches_torch guards the absorption: a torch whose BN rounds the product and
    the sum separately (a build without FMA) fails it."""
    def two_roundings(x, mean, var, weight=None, bias=None, training=False, momentum=0.1,
                      eps=1e-5):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = torch.rsqrt(var + eps) * (1 if weight is None else weight)
        shift = (0 if bias is None else bias) - mean * scale
        return x * scale.view(shape) + shift.view(shape)

    monkeypatch.setattr(kernels, "_bn_exact", None)
    assert kernels.bn_matches_torch()
    monkeypatch.setattr(kernels, "_bn_exact", None)
    monkeypatch.setattr(F, "batch_norm", two_roundings)
    assert not kernels.bn_matches_torch()
