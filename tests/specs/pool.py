"""Specs of the pooling ops (tinygraph/ops/pool.py): tiny shapes, every option drawn. Max
pooling draws distinct values (`grid`): a tie has no derivative for finite differences."""

import torch
from hypothesis import assume
from hypothesis import strategies as st

from tinygraph.testing import Const, Diff, Spec, grid, values


@st.composite
def pool_input(draw, dims, least, elements=values):
    """(N, C, *spatial) or (C, *spatial), each spatial side at least `least[i]`."""
    lead = draw(st.sampled_from([(1,), (2,), (1, 2), (2, 1)]))
    sides = [draw(st.integers(n, n + (2 if dims == 1 else 1))) for n in least]
    return Diff(draw(elements((*lead, *sides))))


@st.composite
def max_pool_inputs(draw):
    dims = draw(st.sampled_from([1, 2]))
    kernel = [draw(st.integers(1, 3)) for _ in range(dims)]
    dilation = [draw(st.integers(1, 2)) for _ in range(dims)]
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    kwargs = {"kernel_size": tuple(kernel), "padding": tuple(padding), "dilation": tuple(dilation)}
    if draw(st.booleans()):
        kwargs["stride"] = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    kwargs["ceil_mode"] = draw(st.booleans())
    kwargs["return_indices"] = draw(st.booleans())
    least = [max(1, d * (k - 1) + 1 - 2 * p) for k, d, p in zip(kernel, dilation, padding)]
    x = draw(pool_input(dims, least, grid))
    # A dilated window that holds only padding gives -inf, and torch's grad for it lands on
    # whatever element its stray index names (another channel's, in 1-d): not a convention to match.
    pool = torch.nn.functional.max_pool1d if dims == 1 else torch.nn.functional.max_pool2d
    assume(torch.isfinite(pool(torch.from_numpy(x.value), **{**kwargs, "return_indices": False})).all())
    return (dims, x), kwargs


@st.composite
def adaptive_inputs(draw, elements=values, keep=True):
    dims = draw(st.sampled_from([1, 2]))
    x = draw(pool_input(dims, [1] * dims, elements))
    size = tuple(draw(st.integers(1, side + 1)) for side in x.value.shape[-dims:])  # larger: overlapping windows
    if keep and dims == 2 and draw(st.booleans()):
        size = (None, size[1])  # keep that dim's size
    return (dims, x), {"output_size": size if dims > 1 or draw(st.booleans()) else size[0]}


@st.composite
def avg_pool_inputs(draw):
    dims = draw(st.sampled_from([1, 2]))
    kernel = [draw(st.integers(1, 3)) for _ in range(dims)]
    padding = [draw(st.integers(0, k // 2)) for k in kernel]
    kwargs = {"kernel_size": kernel[0] if dims == 1 else tuple(kernel), "padding": tuple(padding)}
    if draw(st.booleans()):
        kwargs["stride"] = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    kwargs["ceil_mode"] = draw(st.booleans())
    kwargs["count_include_pad"] = draw(st.booleans())
    if dims == 2 and draw(st.booleans()):
        kwargs["divisor_override"] = draw(st.sampled_from([1, 3, -2]))
    least = [max(1, k - 2 * p) for k, p in zip(kernel, padding)]
    return (dims, draw(pool_input(dims, least))), kwargs


@st.composite
def max_unpool_inputs(draw):
    """Values and the indices max pooling (windows that do not overlap) gives for some input."""
    dims = draw(st.sampled_from([1, 2]))
    kernel = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    kwargs = {"kernel_size": kernel}
    if draw(st.booleans()):  # the source's own size (which need not be a multiple of the kernel)
        source = draw(pool_input(dims, list(kernel), grid)).value
        kwargs["output_size"] = source.shape[-dims:]
    else:
        lead = draw(st.sampled_from([(1,), (2,), (1, 2)]))
        source = draw(grid((*lead, *(k * draw(st.integers(1, 2)) for k in kernel))))
    pool = torch.nn.functional.max_pool1d if dims == 1 else torch.nn.functional.max_pool2d
    pooled, indices = pool(torch.from_numpy(source), kernel, return_indices=True)
    return (dims, Diff(draw(values(tuple(pooled.shape)))), Const(indices.numpy())), kwargs


def _max_pool(lib, F, dims, x, **kw):
    return getattr(F, f"max_pool{dims}d")(x, **kw)


def _adaptive_max_pool(lib, F, dims, x, **kw):
    return getattr(F, f"adaptive_max_pool{dims}d")(x, **kw, return_indices=True)


def _avg_pool(lib, F, dims, x, **kw):
    return getattr(F, f"avg_pool{dims}d")(x, **kw)


def _adaptive_avg_pool(lib, F, dims, x, **kw):
    return getattr(F, f"adaptive_avg_pool{dims}d")(x, **kw)


def _max_unpool(lib, F, dims, x, indices, **kw):
    return getattr(F, f"max_unpool{dims}d")(x, indices, **kw)


def _area(lib, F, dims, x, output_size):
    return F.interpolate(x if x.ndim == dims + 2 else x.unsqueeze(0), size=output_size, mode="area")


SPECS = {
    "MaxPool": [Spec(max_pool_inputs(), _max_pool), Spec(adaptive_inputs(grid), _adaptive_max_pool)],
    "MaxUnpool": [Spec(max_unpool_inputs(), _max_unpool)],
    "AvgPool": [Spec(avg_pool_inputs(), _avg_pool)],
    "AdaptiveAvgPool": [Spec(adaptive_inputs(), _adaptive_avg_pool), Spec(adaptive_inputs(keep=False), _area)],
}
