"""Specs of the convolutions (tinygraph/ops/conv.py): tiny shapes, every option drawn."""

from hypothesis import strategies as st

from tinygraph.testing import Diff, Spec, values


@st.composite
def conv_inputs(draw, transposed=False, dims=(1, 2)):
    """Input, weight, bias and options of conv{1,2,3}d or conv_transpose{1,2,3}d, batched or
    not, sized so that the output has at least one position."""
    dims = draw(st.sampled_from(dims))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    per_group_in = draw(st.integers(1, 2 if groups < 3 else 1))
    per_group_out = draw(st.integers(1, 3 if groups == 1 else 2 if groups == 2 else 1))
    in_ch, out_ch = groups * per_group_in, groups * per_group_out
    kernel = [draw(st.integers(1, 3 if dims == 1 else 2)) for _ in range(dims)]
    stride = [draw(st.integers(1, 2)) for _ in range(dims)]
    dilation = [draw(st.integers(1, 2 if dims < 3 else 1)) for _ in range(dims)]
    padding = [draw(st.integers(0, 2 if dims < 3 else 1)) for _ in range(dims)]
    kwargs = {"groups": groups}
    if transposed:
        # output_padding below max(stride, dilation), and every output length positive
        kwargs["output_padding"] = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
        sizes = []
        for k, s, d, p, extra in zip(kernel, stride, dilation, padding, kwargs["output_padding"]):
            least = max(1, -((-(2 * p - d * (k - 1) - extra)) // s) + 1)  # (L-1)s - 2p + d(k-1) + extra + 1 >= 1
            sizes.append(draw(st.integers(least, least + (3 if dims == 1 else 1 if dims == 2 else 0))))
        weight_shape = (in_ch, per_group_out, *kernel)
    else:
        if dims < 3 and draw(st.booleans()):
            padding = draw(st.sampled_from(["same", "valid"]))
            if padding == "same":
                stride = [1] * dims
        pads = padding if isinstance(padding, list) else [0] * dims
        least = [max(1, d * (k - 1) + 1 - 2 * p) for k, d, p in zip(kernel, dilation, pads)]
        sizes = [draw(st.integers(n, n + (3 if dims == 1 else 1))) for n in least]
        weight_shape = (out_ch, per_group_in, *kernel)
    # options as torch takes them: one int for all dims when they agree, else a tuple, sometimes left out
    for name, option in (("stride", stride), ("padding", padding), ("dilation", dilation)):
        if isinstance(option, str) or draw(st.booleans()):
            kwargs[name] = option if isinstance(option, str) else tuple(option)
        elif len(set(option)) == 1:
            if option[0] != (0 if name == "padding" else 1) or draw(st.booleans()):
                kwargs[name] = option[0]
        else:
            kwargs[name] = tuple(option)
    if transposed:
        kwargs["output_padding"] = tuple(kwargs["output_padding"])
    batch = () if draw(st.integers(0, 3)) == 0 else (draw(st.integers(1, 2)),)
    x = Diff(draw(values((*batch, in_ch, *sizes))))
    w = Diff(draw(values(weight_shape)))
    b = Diff(draw(values((out_ch,)))) if draw(st.booleans()) else None
    return (dims, x, w, b), kwargs


def _conv(lib, F, dims, x, w, b, **kw):
    return getattr(F, f"conv{dims}d")(x, w, b, **kw)


def _conv_transpose(lib, F, dims, x, w, b, **kw):
    return getattr(F, f"conv_transpose{dims}d")(x, w, b, **kw)


SPECS = {
    "Conv": [Spec(conv_inputs(), _conv), Spec(conv_inputs(dims=(3,)), _conv)],
    "ConvTranspose": [
        Spec(conv_inputs(transposed=True), _conv_transpose),
        Spec(conv_inputs(transposed=True, dims=(3,)), _conv_transpose),
    ],
}
