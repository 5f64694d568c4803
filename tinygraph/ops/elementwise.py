"""Elementwise ops. Broadcasting needs no code here: the engine sums each grad back to
its input's shape. Any input may be a Python number; its grad is simply dropped."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..function import Function, register

SQRT1_2 = 1 / math.sqrt(2)
SQRT_2_PI = math.sqrt(2 / math.pi)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


@register
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


@register
class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, -g if ctx.needs_input_grad[1] else None


@register
class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        da, db = ctx.needs_input_grad
        ctx.save_for_backward(b if da else None, a if db else None)
        return a * b

    @staticmethod
    def backward(ctx, g):
        b, a = ctx.saved_tensors
        da, db = ctx.needs_input_grad
        return (g * b if da else None), (g * a if db else None)


@register
class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        da, db = ctx.needs_input_grad
        return (g / b if da else None), (-g * a / (b * b) if db else None)


@register
class Pow(Function):
    @staticmethod
    def forward(ctx, a, b):
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        da, db = ctx.needs_input_grad
        ga = g * b * a ** (b - 1) if da else None
        gb = g * out * (a.log() if not isinstance(a, (int, float)) else math.log(a)) if db else None
        return ga, gb


@register
class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


@register
class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        out = x.exp()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out


@register
class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.log()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


@register
class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        out = x.sqrt()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * 0.5 / out


@register
class Rsqrt(Function):
    @staticmethod
    def forward(ctx, x):
        out = x.rsqrt()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * -0.5 * out * out * out


@register
class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.abs()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x.sign()  # 0 at 0, as torch


@register
class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        out = x.tanh()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (1 - out * out)


@register
class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        out = x.sigmoid()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * out * (1 - out)


@register
class Relu(Function):
    @staticmethod
    def forward(ctx, x):
        out = x.relu()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g * (out > 0)


@register
class Erf(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.erf()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * TWO_OVER_SQRT_PI * (-x * x).exp()


def gelu_composite(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + (SQRT_2_PI * (x + 0.044715 * x * x * x)).tanh())
    return 0.5 * x * (1 + (x * SQRT1_2).erf())


@register
class Gelu(Function):
    """x * Phi(x), Phi the standard normal CDF; `approximate='tanh'` uses GPT-2's tanh form.

    Fused: its backward is a few in-place kernels instead of a dozen, and create_graph
    differentiates `gelu_composite`.
    """

    composite = staticmethod(gelu_composite)

    @staticmethod
    def forward(ctx, x, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}.")
        ctx.approximate = approximate
        out = F.gelu(x, approximate=approximate)
        # the output costs no memory of its own: the next layer keeps the same tensor
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        if ctx.approximate == "none":  # Phi(x) + x * phi(x), with Phi(x) = gelu(x) / x: no erf
            x_phi = (x * x).mul_(-0.5).exp_().mul_(x)
            # gelu(x) * (1/x), not gelu(x) / x: at x so near 0 that x/2 underflows (the quotient
            # would be wrong there), 1/x overflows instead, the product is inf or nan, and Phi is 1/2
            phi_cdf = x.reciprocal().mul_(out).nan_to_num_(0.5, 0.5, 0.5)
            return phi_cdf.add_(x_phi, alpha=INV_SQRT_2PI).mul_(g)
        t = (x * x).mul_(0.044715).add_(1).mul_(x).mul_(SQRT_2_PI).tanh_()  # tanh of the inner term
        dinner = (x * x).mul_(3 * 0.044715 * SQRT_2_PI).add_(SQRT_2_PI)
        slope = (1 - t * t).mul_(dinner).mul_(x).mul_(0.5)
        return t.add_(1).mul_(0.5).add_(slope).mul_(g)


def _tie_split(g, a_wins, tie):
    # torch's rule for maximum/minimum: a tie sends half the grad to each side.
    w = a_wins + tie * 0.5
    return g * w, g * (1 - w)


@register
class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a.maximum(b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return _tie_split(g, a > b, a == b)


@register
class Clamp(Function):
    @staticmethod
    def forward(ctx, x, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: give at least one of min and max.")
        ctx.save_for_backward(x)
        ctx.bounds = (min, max)
        return x.clamp(min, max)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        outside = (x < lo) if hi is None else (x > hi) if lo is None else (x < lo) | (x > hi)
        return g.masked_fill(outside, 0)  # the bounds themselves pass the grad, as in torch


@register
class Where(Function):
    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        return torch.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        return None, g.masked_fill(~cond, 0), g.masked_fill(cond, 0)


@register
class MaskedFill(Function):
    @staticmethod
    def forward(ctx, x, mask, value):
        ctx.save_for_backward(mask)
        return x.masked_fill(mask, value)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g.masked_fill(mask, 0), None, None


@register
class Cast(Function):
    """`x.to(dtype or device)`: the grad goes back to the input's dtype and device."""

    @staticmethod
    def forward(ctx, x, device=None, dtype=None):
        ctx.source = (x.device, x.dtype)
        return x.to(device=device, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        device, dtype = ctx.source
        return g.to(device=device, dtype=dtype)


@register
class Clone(Function):
    @staticmethod
    def forward(ctx, x, contiguous_only=False):
        return x.contiguous() if contiguous_only else x.clone()

    @staticmethod
    def backward(ctx, g):
        return g
