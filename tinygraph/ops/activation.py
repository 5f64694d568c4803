"""Activations: the elementwise nonlinearities of torch.nn.functional (and softmin, glu),
with torch's names and arguments.

`inplace=True` changes the input in place the engine's way (tinygraph/inplace.py): the op
runs on a copy of the old value, which its backward may need, and the result is written
back into the input, whose graph then ends in the op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..function import Function, public, register
from ..inplace import in_place
from ..tensor import require_one_dtype
from .nn import _softmax_dim

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
HARDSIGMOID_SLOPE = 0.1666666716337204  # torch's kernels use 1/6 rounded to float32, for every dtype


def run(op, input, inplace=False, **options):
    """`op` on `input` (with its options as keywords), in place when asked."""
    return in_place(op.apply)(input, **options) if inplace else op.apply(input, **options)


def in_place_form(name, fn):
    """Install torch's `F.name_`: `F.name(input, ..., inplace=True)`."""

    def changed_in_place(input, *args, **kwargs):
        return fn(input, *args, inplace=True, **kwargs)

    changed_in_place.__doc__ = f"{name}, changing the input in place."
    public(f"F.{name}_")(changed_in_place)


@register("F.silu")
class Silu(Function):
    """x * sigmoid(x), the gate of SwiGLU."""

    @staticmethod
    def call(input, inplace=False):
        return run(Silu, input, inplace)

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.silu(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = x.sigmoid()
        return g * s * (1 + x * (1 - s))


@register("F.softplus")
class Softplus(Function):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (torch's switch to
    the identity, where the two agree to double precision; its grad is 1 there)."""

    autocast = "float32"

    @staticmethod
    def call(input, beta=1.0, threshold=20.0):
        return Softplus.apply(input, beta=beta, threshold=threshold)

    @staticmethod
    def forward(ctx, x, beta=1.0, threshold=20.0):
        ctx.beta, ctx.threshold = beta, threshold
        ctx.save_for_backward(x)
        return F.softplus(x, beta, threshold)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        scaled = x * ctx.beta
        return g * scaled.sigmoid().masked_fill(scaled > ctx.threshold, 1)


@register("F.leaky_relu")
class LeakyRelu(Function):
    """x where x > 0, else negative_slope * x."""

    @staticmethod
    def call(input, negative_slope=0.01, inplace=False):
        return run(LeakyRelu, input, inplace, negative_slope=negative_slope)

    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        ctx.slope = negative_slope
        ctx.save_for_backward(x)
        return F.leaky_relu(x, negative_slope)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.where(x > 0, g * ctx.slope)


in_place_form("leaky_relu", LeakyRelu.call)


@register("F.elu")
class Elu(Function):
    """scale * (x where x > 0, else alpha * (exp(x * input_scale) - 1)): elu, and selu and celu
    with torch's constants (selu: fixed alpha and scale; celu: input_scale = 1 / alpha). The
    grad at 0 is the left one, as torch's."""

    @staticmethod
    def call(input, alpha=1.0, inplace=False):
        return run(Elu, input, inplace, alpha=alpha)

    @staticmethod
    def forward(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0, name="Elu"):
        ctx.name, ctx.alpha, ctx.scale, ctx.input_scale = name, alpha, scale, input_scale
        ctx.save_for_backward(x)
        return torch.ops.aten.elu(x, alpha, scale, input_scale)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        # exp of x clamped at 0: exact where it is used (x <= 0), and no overflow to inf where
        # it is not, which would make the second derivative 0 * inf = nan
        left = g * (x.clamp(max=0) * ctx.input_scale).exp() * (ctx.alpha * ctx.scale * ctx.input_scale)
        return (g * ctx.scale).where(x > 0, left)


@public("F.selu tinygraph.selu")
def selu(input, inplace=False):
    """Self-normalizing elu: SELU_SCALE * elu(x, SELU_ALPHA)."""
    return run(Elu, input, inplace, alpha=SELU_ALPHA, scale=SELU_SCALE, name="Selu")


@public("F.celu tinygraph.celu")
def celu(input, alpha=1.0, inplace=False):
    """Continuously differentiable elu: x where x > 0, else alpha * (exp(x / alpha) - 1)."""
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError: alpha cannot be 0 for CELU")
    return run(Elu, input, inplace, alpha=alpha, input_scale=1 / alpha, name="Celu")


in_place_form("elu", Elu.call)
in_place_form("selu", selu)
in_place_form("celu", celu)


@register("F.logsigmoid")
class LogSigmoid(Function):
    """log(sigmoid(x)), stable for any x."""

    autocast = "float32"

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.logsigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (-x).sigmoid()


@register("F.hardtanh")
class Hardtanh(Function):
    """x clamped to [min_val, max_val]. Unlike clamp's, the grad is 0 at the bounds themselves (torch's)."""

    @staticmethod
    def call(input, min_val=-1.0, max_val=1.0, inplace=False):
        if min_val > max_val:
            raise ValueError("min_val cannot be greater than max_val")
        return run(Hardtanh, input, inplace, min_val=min_val, max_val=max_val)

    @staticmethod
    def forward(ctx, x, min_val=-1.0, max_val=1.0):
        ctx.bounds = (min_val, max_val)
        ctx.save_for_backward(x)
        return F.hardtanh(x, min_val, max_val)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        return g.masked_fill((x <= lo) | (x >= hi), 0)


in_place_form("hardtanh", Hardtanh.call)


@public("F.relu6")
def relu6(input, inplace=False):
    """min(max(x, 0), 6): hardtanh(x, 0, 6), as in torch."""
    return Hardtanh.call(input, 0.0, 6.0, inplace)


@register("F.hardsigmoid")
class Hardsigmoid(Function):
    """relu6(x + 3) / 6: 0 up to -3, 1 from 3, a line between (grad 1/6 strictly inside)."""

    @staticmethod
    def call(input, inplace=False):
        return run(Hardsigmoid, input, inplace)

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.hardsigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return (g * HARDSIGMOID_SLOPE).masked_fill(~((x > -3) & (x < 3)), 0)


@register("F.hardswish")
class Hardswish(Function):
    """x * relu6(x + 3) / 6. Grad x / 3 + 1/2 strictly between -3 and 3 (0 at -3, 1 at 3: torch's)."""

    @staticmethod
    def call(input, inplace=False):
        return run(Hardswish, input, inplace)

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.hardswish(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return (g * (x / 3 + 0.5)).where(x < 3, g).masked_fill(x <= -3, 0)


@register("F.mish")
class Mish(Function):
    """x * tanh(softplus(x))."""

    @staticmethod
    def call(input, inplace=False):
        return run(Mish, input, inplace)

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.mish(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        t = Softplus.apply(x).tanh()  # apply serves torch.Tensors and, under create_graph, Tensors
        return g * (t + x * x.sigmoid() * (1 - t * t))


@register("F.threshold tinygraph.threshold")
class Threshold(Function):
    """x where x > threshold, else value (grad 0 there)."""

    @staticmethod
    def call(input, threshold, value, inplace=False):
        return run(Threshold, input, inplace, threshold=threshold, value=value)

    @staticmethod
    def forward(ctx, x, threshold, value):
        ctx.threshold = threshold
        ctx.save_for_backward(x)
        return F.threshold(x, threshold, value)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.masked_fill(x <= ctx.threshold, 0)


in_place_form("threshold", Threshold.call)


@register("F.hardshrink Tensor.hardshrink tinygraph.hardshrink")
class Hardshrink(Function):
    """x where |x| > lambd, else 0 (soft=True: softshrink, x moved lambd towards 0); grad 0 between."""

    @staticmethod
    def call(input, lambd=0.5):
        return Hardshrink.apply(input, lambd=lambd)

    @staticmethod
    def forward(ctx, x, lambd=0.5, soft=False):
        ctx.lambd = lambd
        if soft:
            ctx.name = "Softshrink"
        ctx.save_for_backward(x)
        return F.softshrink(x, lambd) if soft else F.hardshrink(x, lambd)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.masked_fill((x >= -ctx.lambd) & (x <= ctx.lambd), 0)


@public("F.softshrink")
def softshrink(input, lambd=0.5):
    """x - lambd where x > lambd, x + lambd where x < -lambd, else 0."""
    return Hardshrink.apply(input, lambd=lambd, soft=True)


@register("F.prelu tinygraph.prelu Tensor.prelu")
class Prelu(Function):
    """x where x > 0, else weight * x: one slope, or one per channel (dim 1)."""

    @staticmethod
    def call(input, weight):
        channels = input.shape[1] if input.ndim >= 2 else 1
        if weight.numel() not in (1, channels):
            raise RuntimeError(
                "Mismatch of parameter numbers and input channel size. Found parameter numbers = "
                f"{weight.numel()} and channel size = {channels}."
            )
        require_one_dtype("prelu", input=input, weight=weight)
        # the slopes in a shape that broadcasts over the input: the engine sums their grad back
        slope = weight.reshape(()) if weight.numel() == 1 else weight.reshape(-1, *[1] * (input.ndim - 2))
        return Prelu.apply(input, slope)

    @staticmethod
    def forward(ctx, x, slope):
        ctx.save_for_backward(x, slope)
        return torch.where(x > 0, x, slope * x)

    @staticmethod
    def backward(ctx, g):
        x, slope = ctx.saved_tensors
        dx, dslope = ctx.needs_input_grad
        # At x = 0 (the kink) torch's first-order grads take the negative side (g * slope, and
        # g * x = 0) and its second-order ones the positive side (derivatives.yaml: x >= 0):
        # the masks are x >= 0, and at x = 0 a constant brings gx to g * slope.
        gx = g.where(x > 0, g * slope) if dx else None
        # (masked where x >= 0, though g * x is 0 at x = 0 either way: in a second-order pass its
        # derivative at the kink is then 0, the right side's, as torch's)
        return gx, ((g * x).masked_fill(x >= 0, 0) if dslope else None)


@public("F.softsign")
def softsign(input):
    """x / (1 + |x|) (torch's own composition)."""
    return input / (input.abs() + 1)


@public("F.tanhshrink")
def tanhshrink(input):
    """x - tanh(x) (torch's own composition)."""
    return input - input.tanh()


@public("F.softmin")
def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """softmax(-x) along dim (torch's own composition)."""
    return (-input).softmax(_softmax_dim(input, dim), dtype=dtype)


@public("F.glu")
def glu(input, dim=-1):
    """a * sigmoid(b), a and b the first and second halves of input along dim."""
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    if input.shape[dim] % 2:
        raise RuntimeError(
            f"Halving dimension must be even, but dimension {dim % input.ndim} is size {input.shape[dim]}"
        )
    a, b = input.chunk(2, dim)
    return a * b.sigmoid()
