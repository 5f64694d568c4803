"""Specs of padding, interpolation and sliding windows (tinygraph/ops/resample.py)."""

from hypothesis import strategies as st

from tinygraph.testing import Diff, Spec, nonscalar_shapes, values


@st.composite
def pad_inputs(draw):
    mode = draw(st.sampled_from(["constant", "constant", "reflect", "replicate", "circular"]))
    if mode == "constant":  # any number of dims, negative amounts crop
        shape = draw(nonscalar_shapes)
        padded = draw(st.integers(1, len(shape)))
        pad = []
        for side in reversed(shape[len(shape) - padded :]):
            before = draw(st.integers(-(side - 1), 2))
            pad += [before, draw(st.integers(-(side - 1 + min(before, 0)), 2))]
        kwargs = {"value": draw(st.sampled_from([0.0, 1.5]))} if draw(st.booleans()) else {}
        return (Diff(draw(values(shape))), tuple(pad), mode), kwargs
    padded = draw(st.integers(1, 3 if mode != "reflect" else 2))
    batch = (draw(st.integers(1, 2)),) * draw(st.integers(1, 2))  # (C, *sides) or (N, C, *sides)
    sides = [draw(st.integers(1, 4 if padded < 3 else 2)) for _ in range(padded)]
    pad = []
    for side in reversed(sides):
        most = {"reflect": side - 1, "replicate": 2, "circular": side}[mode]  # what torch allows
        pad += [draw(st.integers(0, most)), draw(st.integers(0, most))]
    return (Diff(draw(values((*batch, *sides)))), tuple(pad), mode), {}


@st.composite
def interpolate_inputs(draw):
    mode = draw(st.sampled_from(["nearest", "nearest-exact", "linear", "bilinear", "trilinear"]))
    dims = {"linear": 1, "bilinear": 2, "trilinear": 3}.get(mode) or draw(st.integers(1, 2))
    sides = [draw(st.integers(1, 4 if dims < 3 else 2)) for _ in range(dims)]
    x = Diff(draw(values((draw(st.integers(1, 2)), draw(st.integers(1, 2)), *sides))))
    kwargs = {"mode": mode}
    if draw(st.booleans()):
        size = [draw(st.integers(1, 5 if dims < 3 else 3)) for _ in range(dims)]
        kwargs["size"] = size[0] if dims == 1 and draw(st.booleans()) else tuple(size)
    else:
        choices = [0.5, 0.7, 1.0, 1.5, 2.0, 2.5]
        scales = [draw(st.sampled_from([c for c in choices if side * c >= 1])) for side in sides]
        kwargs["scale_factor"] = scales[0] if len(set(scales)) == 1 else tuple(scales)
        if draw(st.booleans()):
            kwargs["recompute_scale_factor"] = True
    if "linear" in mode and draw(st.booleans()):
        kwargs["align_corners"] = draw(st.booleans())
    return (x,), kwargs


@st.composite
def unfold_inputs(draw):
    shape = draw(nonscalar_shapes)
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    size = draw(st.integers(1, shape[dim]))
    return (Diff(draw(values(shape))), dim, size, draw(st.integers(1, 3))), {}


@st.composite
def im2col_inputs(draw, fold=False):
    """F.unfold's input (N, C, H, W) or (C, H, W) and options; with `fold`, F.fold's input of the
    shape F.unfold gives, and the image size."""
    lead = draw(st.sampled_from([(1,), (2,), (1, 2), (2, 1)]))
    kernel = tuple(draw(st.integers(1, 2)) for _ in range(2))
    kwargs = {
        "dilation": draw(st.integers(1, 2)),
        "padding": draw(st.sampled_from([0, 1, (1, 0)])),
        "stride": draw(st.sampled_from([1, 2, (2, 1)])),
    }
    dilation, padding = kwargs["dilation"], kwargs["padding"]
    pads = padding if isinstance(padding, tuple) else (padding, padding)
    strides = kwargs["stride"] if isinstance(kwargs["stride"], tuple) else (kwargs["stride"],) * 2
    image = [draw(st.integers(max(1, dilation * (k - 1) + 1 - 2 * p), 4)) for k, p in zip(kernel, pads)]
    if not fold:
        return (Diff(draw(values((*lead, *image)))), kernel), kwargs
    blocks = 1
    for side, k, p, s in zip(image, kernel, pads, strides):
        blocks *= (side + 2 * p - dilation * (k - 1) - 1) // s + 1
    columns = (*lead[:-1], lead[-1] * kernel[0] * kernel[1], blocks)
    return (Diff(draw(values(columns))), tuple(image), kernel), kwargs


SPECS = {
    "Pad": [Spec(pad_inputs(), lambda lib, F, x, pad, mode, **kw: F.pad(x, pad, mode, **kw))],
    "Interpolate": [Spec(interpolate_inputs(), lambda lib, F, x, **kw: F.interpolate(x, **kw))],
    "Unfold": [Spec(unfold_inputs(), lambda lib, F, x, dim, size, step: x.unfold(dim, size, step))],
    "Im2Col": [Spec(im2col_inputs(), lambda lib, F, x, kernel, **kw: F.unfold(x, kernel, **kw))],
    "Col2Im": [Spec(im2col_inputs(fold=True), lambda lib, F, x, size, kernel, **kw: F.fold(x, size, kernel, **kw))],
}
