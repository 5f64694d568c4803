"""The convolution, pooling, padding and resizing layers against torch.nn's: the same seed
draws the same weights, state dicts move both ways, and outputs, input grads and parameter
grads agree (float64). Also: second order through convolutions against torch's, views,
and torch's exception types for bad arguments."""

import pytest
import torch
import torch.nn as tnn

import tinygraph as tg
import tinygraph.nn as nn
import tinygraph.nn.functional as F


def compare(ours, theirs, x, *extra, forward=None):
    """Load theirs' weights into ours, run both on x, and compare outputs and all grads."""
    ours.to(torch.float64)
    theirs.double()
    ours.load_state_dict(theirs.state_dict())
    x_ours, x_theirs = tg.Tensor(x.clone(), requires_grad=True), x.clone().requires_grad_()
    out = (forward or (lambda m, x, *e: m(x, *e)))(ours, x_ours, *(tg.Tensor(e) for e in extra))
    out_t = (forward or (lambda m, x, *e: m(x, *e)))(theirs, x_theirs, *extra)
    out, out_t = (out[0], out_t[0]) if isinstance(out, tuple) else (out, out_t)
    torch.testing.assert_close(out.data, out_t.detach(), rtol=1e-10, atol=1e-12)
    g = torch.randn_like(out_t)
    out.backward(tg.Tensor(g))
    out_t.backward(g)
    torch.testing.assert_close(x_ours.grad.data, x_theirs.grad, rtol=1e-9, atol=1e-12)
    theirs_params = dict(theirs.named_parameters())
    assert set(dict(ours.named_parameters())) == set(theirs_params)
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad.data, theirs_params[name].grad, rtol=1e-9, atol=1e-12, msg=name)


CONVS = [
    ("Conv1d", (3, 4, 3), {}, (2, 3, 7)),
    ("Conv1d", (4, 6, 2), {"groups": 2, "dilation": 2, "padding": "same", "padding_mode": "reflect"}, (2, 4, 6)),
    ("Conv1d", (2, 2, 3), {"stride": 2, "padding": 2, "padding_mode": "circular", "bias": False}, (1, 2, 5)),
    ("Conv2d", (2, 4, (3, 2)), {"stride": (2, 1), "padding": (1, 0)}, (2, 2, 6, 5)),
    ("Conv2d", (3, 3, 3), {"groups": 3, "padding": "same", "padding_mode": "replicate"}, (3, 5, 5)),  # unbatched
    ("Conv2d", (2, 3, 2), {"padding": "valid", "dilation": (1, 2)}, (1, 2, 4, 5)),
    ("Conv3d", (2, 2, 2), {"padding": 1}, (1, 2, 3, 3, 3)),
    ("ConvTranspose1d", (3, 4, 3), {"stride": 2, "padding": 1, "output_padding": 1}, (2, 3, 5)),
    ("ConvTranspose2d", (4, 2, 3), {"stride": 2, "groups": 2, "dilation": 2, "bias": False}, (1, 4, 3, 4)),
    ("ConvTranspose3d", (2, 2, 2), {"stride": 2}, (1, 2, 2, 2, 2)),
]


@pytest.mark.parametrize("name,args,kwargs,shape", CONVS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CONVS)])
def test_convolution_layers_match_torchs(name, args, kwargs, shape):
    torch.manual_seed(0)
    ours = getattr(nn, name)(*args, **kwargs)
    torch.manual_seed(0)
    theirs = getattr(tnn, name)(*args, **kwargs)
    for key, value in theirs.state_dict().items():  # the same seed draws the same weights
        assert torch.equal(ours.state_dict()[key], value), key
    assert repr(ours) == repr(theirs)
    compare(ours, theirs, torch.randn(shape, dtype=torch.float64))
    theirs.load_state_dict(ours.state_dict())  # and back


def test_conv_transpose_output_size_picks_the_output_padding():
    ours, theirs = nn.ConvTranspose2d(2, 3, 3, stride=3), tnn.ConvTranspose2d(2, 3, 3, stride=3)
    x = torch.randn(1, 2, 2, 3, dtype=torch.float64)
    compare(ours, theirs, x, forward=lambda m, x: m(x, output_size=[1, 3, 7, 10]))
    with pytest.raises(ValueError, match="valid sizes range"):
        ours(tg.Tensor(x), output_size=(9, 9))


LAYERS = [
    ("MaxPool1d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (2, 3, 8)),
    ("MaxPool2d", (2,), {"dilation": 2, "return_indices": True}, (1, 2, 6, 5)),
    ("MaxPool3d", (2,), {}, (1, 1, 4, 4, 4)),
    ("AvgPool1d", (3,), {"padding": 1, "count_include_pad": False}, (2, 3, 7)),
    ("AvgPool2d", ((3, 2),), {"stride": 2, "ceil_mode": True, "divisor_override": 5}, (1, 2, 7, 6)),
    ("AvgPool3d", (2,), {"padding": 1}, (1, 1, 3, 4, 3)),
    ("AdaptiveAvgPool1d", (5,), {}, (2, 3, 7)),
    ("AdaptiveAvgPool2d", ((None, 3),), {}, (1, 2, 5, 7)),
    ("AdaptiveAvgPool3d", (2,), {}, (1, 1, 3, 5, 4)),
    ("AdaptiveMaxPool1d", (3,), {"return_indices": True}, (2, 2, 8)),
    ("AdaptiveMaxPool2d", ((2, 3),), {}, (1, 2, 5, 7)),
    ("Upsample", (), {"scale_factor": 2, "mode": "bilinear", "align_corners": True}, (1, 2, 3, 4)),
    ("Upsample", (), {"size": (5, 7), "mode": "nearest"}, (1, 2, 3, 4)),
    ("Upsample", (), {"scale_factor": 1.5, "mode": "linear"}, (2, 1, 5)),
    ("Upsample", (), {"size": 3, "mode": "area"}, (1, 1, 7)),
    ("UpsamplingBilinear2d", (), {"scale_factor": 2}, (1, 1, 3, 3)),
    ("UpsamplingNearest2d", (), {"size": 5}, (1, 1, 3, 3)),
    ("ZeroPad2d", ((1, 0, 2, -1),), {}, (1, 2, 4, 4)),
    ("ConstantPad1d", (2, 3.5), {}, (2, 3, 4)),
    ("ConstantPad3d", ((1, 0, 0, 1, 1, 0),), {"value": -1.0}, (1, 2, 2, 2)),
    ("ReflectionPad1d", ((2, 1),), {}, (2, 3, 4)),
    ("ReflectionPad2d", (1,), {}, (1, 2, 3, 3)),
    ("ReplicationPad2d", ((2, 0, 1, 3),), {}, (1, 2, 3, 3)),
    ("ReplicationPad3d", (1,), {}, (1, 1, 2, 2, 2)),
    ("CircularPad1d", (2,), {}, (1, 2, 3)),
    ("CircularPad2d", ((1, 2, 0, 1),), {}, (2, 3, 3)),
    ("Unfold", ((2, 3),), {"padding": 1, "stride": 2}, (2, 3, 5, 6)),
    ("Fold", ((4, 5), 2), {"stride": (2, 1)}, (2, 12, 8)),
]


@pytest.mark.parametrize("name,args,kwargs,shape", LAYERS, ids=[f"{c[0]}-{i}" for i, c in enumerate(LAYERS)])
def test_pooling_padding_and_resizing_layers_match_torchs(name, args, kwargs, shape):
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(tnn, name)(*args, **kwargs)
    assert not list(ours.parameters())
    compare(ours, theirs, torch.randn(shape, dtype=torch.float64))


def test_max_unpool_inverts_max_pool_as_torchs_does():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    _, indices = tnn.functional.max_pool2d(x, 2, return_indices=True)
    pooled = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    compare(nn.MaxUnpool2d(2), tnn.MaxUnpool2d(2), pooled, indices, forward=lambda m, x, i: m(x, i, (5, 7)))
    _, indices = tnn.functional.max_pool1d(x[0], 3, return_indices=True)
    compare(nn.MaxUnpool1d(3), tnn.MaxUnpool1d(3), torch.randn(3, 5, 2, dtype=torch.float64), indices)


@pytest.mark.parametrize("transposed", [False, True])
def test_second_order_through_a_convolution_equals_torchs(transposed):
    """d/dx and d/dw of (grad_x . v) for a grouped, strided, dilated, padded convolution: the
    backward's own Conv and ConvTranspose nodes, differentiated, against torch's double backward."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(*((4, 3) if transposed else (6, 2)), 3, 2, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    options = {"stride": 2, "padding": (1, 0), "dilation": (2, 1), "groups": 2}
    if transposed:
        options["output_padding"] = 1

    def run(lib, F, x, w, b):
        grad = tg.grad if lib is tg else torch.autograd.grad
        y = (F.conv_transpose2d if transposed else F.conv2d)(x, w, b, **options)
        v = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
        gx, gw = grad((y * (tg.Tensor(v) if lib is tg else v)).sum(), (x, w), create_graph=True)
        if lib is tg:  # recorded by the registry's own ops
            assert gx.grad_fn.name == ("Conv" if transposed else "ConvTranspose")
        return grad((gx * gx).sum() + (gw * gw).sum(), (x, w, b), allow_unused=True)

    ours = run(tg, F, *(tg.Tensor(t, requires_grad=True) for t in (x, w, b)))
    theirs = run(torch, tnn.functional, *(t.clone().requires_grad_() for t in (x, w, b)))
    for a, t in zip(ours, theirs):
        assert (a is None) == (t is None)
        if t is not None:
            torch.testing.assert_close(a.data, t, rtol=1e-9, atol=1e-10)


def test_tensor_unfold_is_a_view_of_its_input():
    x = tg.randn(6, 2, dtype=tg.float64, requires_grad=True)
    xt = x.data.clone().requires_grad_()
    outs = []
    for lib_x in (x, xt):
        base = lib_x * 1
        windows = base.unfold(0, 3, 2)  # (2, 2, 3): the two windows share row 2
        base[2] = base[2] * 10  # a change of the base shows through the view
        outs.append((windows * windows).sum())
    torch.testing.assert_close(outs[0].data, outs[1].detach())
    outs[0].backward()
    outs[1].backward()
    torch.testing.assert_close(x.grad.data, xt.grad)


def test_bad_arguments_raise_torchs_exception_types():
    x, w = tg.randn(1, 2, 5), tg.randn(3, 2, 3)
    with pytest.raises(RuntimeError, match="Invalid padding string"):
        F.conv1d(x, w, padding="full")
    with pytest.raises(RuntimeError, match="strided convolutions"):
        F.conv1d(x, w, padding="same", stride=2)
    with pytest.raises(RuntimeError, match="Expected 2D \\(unbatched\\) or 3D"):
        F.conv1d(x.reshape(1, 1, 2, 5), w)
    with pytest.raises(RuntimeError):
        F.conv2d(tg.randn(1, 2, 5, 5), tg.randn(3, 2, 3, 3), groups=2)
    with pytest.raises(TypeError, match="padding"):
        F.conv_transpose1d(x, tg.randn(2, 3, 3), padding="same")
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv1d(2, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="zeros"):
        nn.ConvTranspose1d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv1d(2, 2, 3, padding_mode="mirror")
    with pytest.raises(RuntimeError, match="should be less than the corresponding input dimension"):
        F.pad(x, (5, 5), mode="reflect")
    with pytest.raises(NotImplementedError, match="Unrecognised padding mode"):
        F.pad(x, (1, 1), mode="mirror")
    with pytest.raises(NotImplementedError, match="bicubic"):
        F.interpolate(tg.randn(1, 1, 3, 3), scale_factor=2, mode="bicubic")
    with pytest.raises(NotImplementedError, match="antialias"):
        F.interpolate(tg.randn(1, 1, 3, 3), scale_factor=2, mode="bilinear", antialias=True)
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(tg.randn(1, 1, 3), scale_factor=2, align_corners=True)
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        F.max_pool2d(tg.randn(1, 1, 4, 4), 2, padding=2)
    with pytest.raises(RuntimeError, match="divisor must be not zero"):
        F.avg_pool2d(tg.randn(1, 1, 4, 4), 2, divisor_override=0)
    with pytest.raises(TypeError, match="divisor_override"):
        F.avg_pool1d(x, 2, divisor_override=2)
    with pytest.raises(RuntimeError, match="step is 0"):
        x.unfold(-1, 2, 0)
    with pytest.raises(IndexError):
        x.unfold(3, 2, 1)
