"""Elementwise ops. Broadcasting needs no code here: the engine sums each grad back to
its input's shape. Any input may be a Python number; its grad is simply dropped."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import kernels
from ..compiled import compiled
from ..function import Function, public, register
from ..native import gelu as native_gelu
from ..native import preferred
from ..tensor import Tensor, unwrap

SQRT1_2 = 1 / math.sqrt(2)
SQRT_2_PI = math.sqrt(2 / math.pi)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def zero_where(t, mask):
    """t with zeros where `mask` holds; `mask` may be a plain bool (a number's comparison)."""
    if isinstance(mask, bool):
        return t.new_zeros(t.shape) if mask else t
    return t.masked_fill(mask, 0)


@register("Tensor.add Tensor.add_ Tensor.__add__ Tensor.__radd__ Tensor.__iadd__ tinygraph.add")
class Add(Function):
    @staticmethod
    def call(input, other, *, alpha=1):
        return Add.apply(input, other if alpha == 1 else other * alpha)

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


@register("Tensor.sub Tensor.sub_ Tensor.__sub__ Tensor.__rsub__ Tensor.__isub__ tinygraph.sub tinygraph.subtract")
class Sub(Function):
    @staticmethod
    def call(input, other, *, alpha=1):
        return Sub.apply(input, other if alpha == 1 else other * alpha)

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, -g if ctx.needs_input_grad[1] else None


@register("Tensor.mul Tensor.mul_ Tensor.__mul__ Tensor.__rmul__ Tensor.__imul__ tinygraph.mul tinygraph.multiply")
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


@register(
    "Tensor.__truediv__ Tensor.__rtruediv__ Tensor.__itruediv__ Tensor.true_divide Tensor.true_divide_ "
    "tinygraph.true_divide"
)
class Div(Function):
    """a / b (`div` and `divide`, with their rounding modes, are in ops/math.py)."""

    @staticmethod
    def call(a, b):
        if not isinstance(a, (Tensor, torch.Tensor)):
            # a number over a tensor is 1/b times the number, as in torch: backward then keeps
            # 1/b, not b, so b may change in place before it (and its zeros and overflows match)
            return b.reciprocal() * a
        return Div.apply(a, b)

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        da, db = ctx.needs_input_grad
        # (a / b) / b, not a / (b * b): b * b underflows to 0 for |b| < 1e-154; and grouped as
        # torch groups it, so that a zero grad times an overflowed quotient is nan as in torch
        return (g / b if da else None), (-g * ((a / b) / b) if db else None)


@register("Tensor.pow Tensor.pow_ Tensor.__pow__ Tensor.__rpow__ Tensor.__ipow__ tinygraph.pow")
class Pow(Function):
    """a ** b, either may be a number. torch's values at the edges: x ** 0 has grad 0 (even
    at x = 0, where the formula says 0 * inf), and 0 ** y has grad 0 with respect to y where
    y >= 0. (Only those points are masked, so second derivatives elsewhere stay exact.)"""

    @staticmethod
    def forward(ctx, a, b):
        out = torch.pow(a, b)
        ctx.save_for_backward(a, b, out if ctx.needs_input_grad[1] else None)  # out: for b's grad only
        return out

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        da, db = ctx.needs_input_grad
        ga = zero_where(g * b * a ** (b - 1), (b == 0) & (a == 0)) if da else None  # 0 * inf there
        gb = None
        if db:
            if isinstance(a, (int, float)):
                log_a = math.log(a) if a > 0 else -math.inf if a == 0 else math.nan
                gb = zero_where(g * out * log_a, b >= 0) if a == 0 else g * out * log_a
            else:
                gb = zero_where(g * out * a.log(), (a == 0) & (b >= 0))
        return ga, gb


@register("Tensor.neg Tensor.neg_ Tensor.__neg__ Tensor.negative tinygraph.neg tinygraph.negative")
class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return -g


@register("Tensor.exp Tensor.exp_ tinygraph.exp")
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


@register("Tensor.log Tensor.log_ tinygraph.log")
class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.log()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / x


@register("Tensor.sqrt Tensor.sqrt_ tinygraph.sqrt")
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


@register("Tensor.rsqrt Tensor.rsqrt_ tinygraph.rsqrt")
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


@register("Tensor.abs Tensor.abs_ Tensor.__abs__ tinygraph.abs")
class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.abs()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x.sign()  # 0 at 0, as torch


@register("Tensor.sign Tensor.sign_ tinygraph.sign")
class Sign(Function):
    """-1, 0 or 1; its grad is zero everywhere, as torch defines it."""

    @staticmethod
    def forward(ctx, x):
        return x.sign()

    @staticmethod
    def backward(ctx, g):
        return g.new_zeros(g.shape)


@register("Tensor.tanh Tensor.tanh_ tinygraph.tanh F.tanh")
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


@register("Tensor.sigmoid Tensor.sigmoid_ tinygraph.sigmoid F.sigmoid")
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


@register("Tensor.relu Tensor.relu_ tinygraph.relu F.relu")
class Relu(Function):
    @staticmethod
    def call(input, inplace=False):
        return input.relu_() if inplace else Relu.apply(input)

    @staticmethod
    def forward(ctx, x):
        out = x.relu()
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        # a select, as torch's threshold_backward, not g * mask: a nan flowing into a
        # second-order pass (copysign's at 0) stays out where the relu was off
        return g.masked_fill(out <= 0, 0)


@register("Tensor.erf Tensor.erf_ tinygraph.erf")
class Erf(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.erf()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * TWO_OVER_SQRT_PI * (-x * x).exp()


@public("Tensor.square Tensor.square_ tinygraph.square")
def square(input):
    """input * input."""
    return input * input


def gelu_composite(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + (SQRT_2_PI * (x + 0.044715 * x * x * x)).tanh())
    return 0.5 * x * (1 + (x * SQRT1_2).erf())


@register("F.gelu")
class Gelu(Function):
    """x * Phi(x), Phi the standard normal CDF; `approximate='tanh'` uses GPT-2's tanh form.

    Fused: its backward is a few in-place kernels instead of a dozen, and create_graph
    differentiates `gelu_composite`.
    """

    composite = staticmethod(gelu_composite)

    @staticmethod
    def call(input, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise RuntimeError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}.")
        return Gelu.apply(input, approximate)

    @staticmethod
    def forward(ctx, x, approximate="none"):
        ctx.approximate = approximate
        ctx.kernel = kernels.use(x)
        out = kernels.module("gelu").gelu_forward(x, approximate) if ctx.kernel else F.gelu(x, approximate=approximate)
        # the output costs no memory of its own: the next layer keeps the same tensor. (torch's
        # saves only x, so there an in-place change of the output before backward is allowed;
        # here it is an error that says so: a deliberate difference, for speed.)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        if ctx.kernel:
            return kernels.module("gelu").gelu_backward(g, x, ctx.approximate)[0], None
        return gelu_backward(g, x, out, ctx.approximate), None


@preferred(native_gelu.gelu_backward)
@compiled
def gelu_backward(g, x, out, approximate):
    """g * gelu'(x). Computed from x alone, as torch's formula is: inside a compiled step the
    output is recomputed from x rather than kept, so taking Phi(x) from it (as the C kernel
    does, to skip an erf) would cost a pass more, not less; `out` is the kernel's."""
    if approximate == "none":  # Phi(x) + x * phi(x)
        phi_cdf = (x * SQRT1_2).erf_().add_(1).mul_(0.5)
        x_phi = (x * x).mul_(-0.5).exp_().mul_(x)
        return phi_cdf.add_(x_phi, alpha=INV_SQRT_2PI).mul_(g)
    t = (x * x).mul_(0.044715).add_(1).mul_(x).mul_(SQRT_2_PI).tanh_()  # tanh of the inner term
    dinner = (x * x).mul_(3 * 0.044715 * SQRT_2_PI).add_(SQRT_2_PI)
    slope = (1 - t * t).mul_(dinner).mul_(x).mul_(0.5)
    return t.add_(1).mul_(0.5).add_(slope).mul_(g)


def _tie_split(g, a_wins, tie):
    # torch's rule for maximum/minimum: a tie sends half the grad to each side.
    w = a_wins + tie * 0.5
    return g * w, g * (1 - w)


@register("Tensor.maximum tinygraph.maximum")
class Maximum(Function):
    """The larger of a and b, elementwise (the smaller with largest=False: minimum)."""

    @staticmethod
    def forward(ctx, a, b, largest=True):
        ctx.save_for_backward(a, b)
        ctx.largest = largest
        if not largest:
            ctx.name = "Minimum"
        return torch.maximum(a, b) if largest else torch.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return (*_tie_split(g, a > b if ctx.largest else a < b, a == b), None)


@public("Tensor.minimum tinygraph.minimum")
def minimum(input, other):
    """The smaller of input and other, elementwise (a tie splits the grad in halves)."""
    return Maximum.apply(input, other, False)


@register("Tensor.clamp Tensor.clamp_ Tensor.clip Tensor.clip_ tinygraph.clamp tinygraph.clip")
class Clamp(Function):
    """x limited to [min, max] elementwise; each bound a number, a tensor (it gets a grad
    where it is the result) or None."""

    @staticmethod
    def call(input, min=None, max=None):
        if min is None and max is None:
            raise RuntimeError("clamp: give at least one of min and max.")
        return Clamp.apply(input, min, max)

    @staticmethod
    def forward(ctx, x, min, max):
        ctx.save_for_backward(x, min, max)
        return torch.clamp(x, min, max)

    @staticmethod
    def backward(ctx, g):
        x, lo, hi = ctx.saved_tensors
        dx, dlo, dhi = ctx.needs_input_grad
        # torch's rules: x's grad passes where lo <= x <= hi (bounds included, NaN excluded), a
        # bound's where x is beyond it; when lo > hi the result is hi, so hi gets it all
        gx = glo = ghi = None
        if dx:
            gx = _passed(g, x >= lo if hi is None else x <= hi if lo is None else (x >= lo) & (x <= hi))
        if dlo:
            glo = _passed(g, x < lo if hi is None else (x < lo) & (lo < hi))
        if dhi:
            ghi = _passed(g, x > hi if lo is None else (x > hi) | (hi < lo))
        return gx, glo, ghi


def _passed(g, keep):
    """g where `keep` holds, else 0: masked, not multiplied, so a NaN or Inf in g stays where `keep` holds."""
    return g.masked_fill(~keep, 0)


@register("tinygraph.where")
class Where(Function):
    @staticmethod
    def call(condition, input, other):
        """`input` where `condition` holds, else `other`; either may be a number."""
        return Where.apply(unwrap(condition), input, other)

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        return torch.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        return None, g.masked_fill(~cond, 0), g.masked_fill(cond, 0)


@public("Tensor.where")
def where_method(input, condition, other):
    """`input` where `condition` holds, else `other` (torch.Tensor.where's order)."""
    return Where.apply(unwrap(condition), input, other)


@register("Tensor.masked_fill Tensor.masked_fill_ tinygraph.masked_fill")
class MaskedFill(Function):
    """`value` where `mask` holds; `value` is a number or a 0-dim tensor (whose grad is
    the sum of the grads at the filled places)."""

    @staticmethod
    def call(input, mask, value):
        return MaskedFill.apply(input, unwrap(mask), value)

    @staticmethod
    def forward(ctx, x, mask, value):
        ctx.save_for_backward(mask)
        return x.masked_fill(mask, value)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        dx, _, dvalue = ctx.needs_input_grad
        return (g.masked_fill(mask, 0) if dx else None), None, (g.masked_fill(~mask, 0) if dvalue else None)


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


@public("Tensor.to")
def to(input, *args, **kwargs):
    """`to(device)`, `to(dtype)`, `to(device, dtype)` or `to(other)`, differentiable for
    floating-point targets (an integer or bool result carries no grad, as in torch)."""
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    for a in args:
        if isinstance(a, torch.dtype):
            dtype = a
        elif isinstance(a, (Tensor, torch.Tensor)):
            device, dtype = a.device, a.dtype
        else:
            device = a
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else device
    if (device is None or device == input.device) and (dtype is None or dtype == input.dtype):
        return input
    if dtype is not None and not (dtype.is_floating_point or dtype.is_complex):
        return Tensor._make(input.data.to(device=device, dtype=dtype), None)  # no grad through ints
    return Cast.apply(input, device=device, dtype=dtype)


def _converter(name: str, **target):
    def convert(input):
        return to(input, **target)

    convert.__doc__ = f"`x.{name}()`: x.to({', '.join(f'{k}={v}' for k, v in target.items())})."
    return convert


for _name, _target in {
    "float": {"dtype": torch.float32},
    "double": {"dtype": torch.float64},
    "half": {"dtype": torch.float16},
    "bfloat16": {"dtype": torch.bfloat16},
    "long": {"dtype": torch.int64},
    "int": {"dtype": torch.int32},
    "bool": {"dtype": torch.bool},
    "cpu": {"device": "cpu"},
}.items():
    public(f"Tensor.{_name}")(_converter(_name, **_target))


@public("Tensor.cuda")
def cuda(input, device=None):
    return to(input, device if device is not None else "cuda")


@public("Tensor.type_as")
def type_as(input, other):
    return to(input, other.dtype)


@register("Tensor.clone tinygraph.clone")
class Clone(Function):
    @staticmethod
    def forward(ctx, x, contiguous_only=False):
        return x.contiguous() if contiguous_only else x.clone()

    @staticmethod
    def backward(ctx, g):
        return g


@public("Tensor.contiguous")
def contiguous(input):
    """input itself when its memory is contiguous, else a contiguous copy."""
    return input if input.data.is_contiguous() else Clone.apply(input, contiguous_only=True)
