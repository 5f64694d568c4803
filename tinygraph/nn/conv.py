"""Convolution, pooling, padding and resizing layers with torch.nn's names, arguments,
attributes, parameter names, weight layout and initialization: a state dict moves between
tinygraph and torch both ways, and the same seed draws the same weights."""

from __future__ import annotations

import math
from typing import Any

from ..tensor import Tensor
from . import functional as F
from .layers import _uniform
from .module import Module

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _per_dim(value: Any, dims: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


class _ConvNd(Module):
    """What Conv1d/2d/3d and ConvTranspose1d/2d/3d share: options, checks, weight and bias."""

    dims: int
    transposed = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        output_padding: Any = 0,
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__()
        name = type(self).__name__
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups:
            raise ValueError("out_channels must be divisible by groups")
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"padding_mode must be one of {list(PADDING_MODES)}, but got padding_mode='{padding_mode}'"
            )
        if self.transposed and padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {name}')
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = _per_dim(kernel_size, self.dims), _per_dim(stride, self.dims)
        self.dilation, self.output_padding = _per_dim(dilation, self.dims), _per_dim(output_padding, self.dims)
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = _per_dim(padding, self.dims)
        channels = (in_channels, out_channels // groups) if self.transposed else (out_channels, in_channels // groups)
        shape = (*channels, *self.kernel_size)
        # torch's kaiming_uniform_(a=sqrt(5)), computed as torch computes it (the same seed, the same weights)
        fan_in = shape[1] * math.prod(self.kernel_size)
        gain = math.sqrt(2.0 / (1 + 5))
        self.weight = _uniform(shape, math.sqrt(3.0) * (gain / math.sqrt(fan_in)) if fan_in else 0.0, device, dtype)
        self.bias = _uniform((out_channels,), 1 / math.sqrt(fan_in) if fan_in else 0.0, device, dtype) if bias else None

    def _explicit_padding(self) -> list[int]:
        """The padding as F.pad takes it (last dim first), for padding modes other than zeros."""
        if self.padding == "valid":
            return [0] * 2 * self.dims
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            return [p for t in reversed(totals) for p in (t // 2, t - t // 2)]
        return [p for p in reversed(self.padding) for _ in range(2)]

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self.dims:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * self.dims:
            text += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self.dims:
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text


class _Conv(_ConvNd):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            0,
            device,
            dtype,
        )

    def forward(self, input: Tensor) -> Tensor:
        conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]
        if self.padding_mode != "zeros":
            input = F.pad(input, self._explicit_padding(), mode=self.padding_mode)
            return conv(input, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(_Conv):
    """Cross-correlation over (N, C_in, L): weight (out_channels, in_channels / groups, k), bias (out_channels)."""

    dims = 1


class Conv2d(_Conv):
    """Cross-correlation over (N, C_in, H, W): weight (out_channels, in_channels / groups, kh, kw), bias (out_channels)."""

    dims = 2


class Conv3d(_Conv):
    """Cross-correlation over (N, C_in, D, H, W): weight (out_channels, in_channels / groups, *kernel)."""

    dims = 3


class _ConvTranspose(_ConvNd):
    transposed = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            output_padding, device, dtype,
        )  # fmt: skip

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        """`output_size` picks among the output sizes a strided transpose can have (it sets output_padding)."""
        conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[self.dims - 1]
        extra = self.output_padding if output_size is None else self._output_padding(input, output_size)
        return conv(input, self.weight, self.bias, self.stride, self.padding, extra, self.groups, self.dilation)

    def _output_padding(self, input: Tensor, output_size: Any) -> tuple[int, ...]:
        wanted = list(output_size)[-self.dims :]
        spatial = input.shape[-self.dims :]
        smallest = [
            (size - 1) * s - 2 * p + d * (k - 1) + 1
            for size, s, p, d, k in zip(spatial, self.stride, self.padding, self.dilation, self.kernel_size)
        ]
        for want, least, s in zip(wanted, smallest, self.stride):
            if not least <= want <= least + s - 1:
                raise ValueError(
                    f"requested an output size of {wanted}, but valid sizes range from {smallest} to "
                    f"{[n + s - 1 for n, s in zip(smallest, self.stride)]} (for an input of {list(spatial)})"
                )
        return tuple(w - n for w, n in zip(wanted, smallest))


class ConvTranspose1d(_ConvTranspose):
    """The transpose of Conv1d: weight (in_channels, out_channels / groups, k), bias (out_channels)."""

    dims = 1


class ConvTranspose2d(_ConvTranspose):
    """The transpose of Conv2d: weight (in_channels, out_channels / groups, kh, kw), bias (out_channels)."""

    dims = 2


class ConvTranspose3d(_ConvTranspose):
    """The transpose of Conv3d: weight (in_channels, out_channels / groups, *kernel), bias (out_channels)."""

    dims = 3


# ---- pooling ---------------------------------------------------------------------------------------------------


class _MaxPoolNd(Module):
    dims: int

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input: Tensor) -> Any:
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[self.dims - 1]
        options = (self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)
        return pool(input, *options)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class MaxPool1d(_MaxPoolNd):
    """The largest element of each window along the last dim."""

    dims = 1


class MaxPool2d(_MaxPoolNd):
    """The largest element of each window over the last 2 dims."""

    dims = 2


class MaxPool3d(_MaxPoolNd):
    """The largest element of each window over the last 3 dims."""

    dims = 3


class _AvgPoolNd(Module):
    dims: int

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode, self.count_include_pad = padding, ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input: Tensor) -> Tensor:
        options = (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)
        if self.dims == 1:
            return F.avg_pool1d(input, *options)
        return (F.avg_pool2d, F.avg_pool3d)[self.dims - 2](input, *options, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """The mean of each window along the last dim."""

    dims = 1

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AvgPool2d(_AvgPoolNd):
    """The mean of each window over the last 2 dims (or its sum / divisor_override)."""

    dims = 2


class AvgPool3d(_AvgPoolNd):
    """The mean of each window over the last 3 dims (or its sum / divisor_override)."""

    dims = 3


class _AdaptivePoolNd(Module):
    dims: int
    largest = False

    def __init__(self, output_size: Any, return_indices: bool = False):
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, input: Tensor) -> Any:
        if self.largest:
            pool = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[self.dims - 1]
            return pool(input, self.output_size, self.return_indices)
        return (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[self.dims - 1](
            input, self.output_size
        )

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class _AdaptiveAvgPoolNd(_AdaptivePoolNd):
    def __init__(self, output_size: Any):
        super().__init__(output_size)


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """The mean of each of `output_size` windows along the last dim, as even as can be."""

    dims = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """The mean of each of `output_size` windows over the last 2 dims (None keeps a size)."""

    dims = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """The mean of each of `output_size` windows over the last 3 dims (None keeps a size)."""

    dims = 3


class AdaptiveMaxPool1d(_AdaptivePoolNd):
    """The largest element of each of `output_size` windows along the last dim."""

    dims, largest = 1, True


class AdaptiveMaxPool2d(_AdaptivePoolNd):
    """The largest element of each of `output_size` windows over the last 2 dims."""

    dims, largest = 2, True


class AdaptiveMaxPool3d(_AdaptivePoolNd):
    """The largest element of each of `output_size` windows over the last 3 dims."""

    dims, largest = 3, True


class _MaxUnpoolNd(Module):
    dims: int

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding = padding

    def forward(self, input: Tensor, indices: Tensor, output_size: Any = None) -> Tensor:
        unpool = (F.max_unpool1d, F.max_unpool2d, F.max_unpool3d)[self.dims - 1]
        return unpool(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(_MaxUnpoolNd):
    """The inverse of MaxPool1d given its indices (zeros where no maximum was)."""

    dims = 1


class MaxUnpool2d(_MaxUnpoolNd):
    """The inverse of MaxPool2d given its indices (zeros where no maximum was)."""

    dims = 2


class MaxUnpool3d(_MaxUnpoolNd):
    """The inverse of MaxPool3d given its indices (zeros where no maximum was)."""

    dims = 3


# ---- resizing, padding, blocks ---------------------------------------------------------------------------------


class Upsample(Module):
    """F.interpolate as a layer: to `size`, or by `scale_factor`, with `mode` and `align_corners`."""

    def __init__(
        self,
        size: Any = None,
        scale_factor: Any = None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
    ):
        super().__init__()
        self.size, self.mode, self.align_corners = size, mode, align_corners
        self.scale_factor = float(scale_factor) if isinstance(scale_factor, (int, float)) else scale_factor
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input: Tensor) -> Tensor:
        return F.interpolate(
            input, self.size, self.scale_factor, self.mode, self.align_corners, self.recompute_scale_factor
        )

    def extra_repr(self) -> str:
        how = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{how}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    """Upsample with mode='nearest' (torch's older name)."""

    def __init__(self, size: Any = None, scale_factor: Any = None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """Upsample with mode='bilinear' and align_corners=True (torch's older name)."""

    def __init__(self, size: Any = None, scale_factor: Any = None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


class _PadNd(Module):
    """F.pad as a layer over the last `dims` dims: padding an int (every side) or 2 * dims ints
    (left, right, top, bottom, front, back)."""

    dims: int
    mode: str
    value = 0.0

    def __init__(self, padding: Any):
        super().__init__()
        self.padding = _per_dim(padding, 2 * self.dims)
        if len(self.padding) != 2 * self.dims:
            raise ValueError(f"{type(self).__name__} takes an int or {2 * self.dims} ints, not {padding}.")

    def forward(self, input: Tensor) -> Tensor:
        if self.mode == "constant":
            return F.pad(input, self.padding, "constant", self.value)
        return F.pad(input, self.padding, self.mode)

    def extra_repr(self) -> str:
        return f"{self.padding}, value={self.value}" if self.mode == "constant" else f"{self.padding}"


class _ConstantPadNd(_PadNd):
    mode = "constant"

    def __init__(self, padding: Any, value: float):
        super().__init__(padding)
        self.value = value


class ConstantPad1d(_ConstantPadNd):
    """`value` around the last dim."""

    dims = 1


class ConstantPad2d(_ConstantPadNd):
    """`value` around the last 2 dims."""

    dims = 2


class ConstantPad3d(_ConstantPadNd):
    """`value` around the last 3 dims."""

    dims = 3


class _ZeroPadNd(_ConstantPadNd):
    def __init__(self, padding: Any):
        super().__init__(padding, 0.0)


class ZeroPad1d(_ZeroPadNd):
    """Zeros around the last dim."""

    dims = 1


class ZeroPad2d(_ZeroPadNd):
    """Zeros around the last 2 dims."""

    dims = 2


class ZeroPad3d(_ZeroPadNd):
    """Zeros around the last 3 dims."""

    dims = 3


class ReflectionPad1d(_PadNd):
    """The reflection of the last dim at its ends (the edge itself not repeated)."""

    dims, mode = 1, "reflect"


class ReflectionPad2d(_PadNd):
    """The reflection of the last 2 dims at their ends (the edge itself not repeated)."""

    dims, mode = 2, "reflect"


class ReflectionPad3d(_PadNd):
    """The reflection of the last 3 dims at their ends (the edge itself not repeated)."""

    dims, mode = 3, "reflect"


class ReplicationPad1d(_PadNd):
    """Copies of the edge elements of the last dim."""

    dims, mode = 1, "replicate"


class ReplicationPad2d(_PadNd):
    """Copies of the edge elements of the last 2 dims."""

    dims, mode = 2, "replicate"


class ReplicationPad3d(_PadNd):
    """Copies of the edge elements of the last 3 dims."""

    dims, mode = 3, "replicate"


class CircularPad1d(_PadNd):
    """The last dim wrapped around: each end padded with the other end."""

    dims, mode = 1, "circular"


class CircularPad2d(_PadNd):
    """The last 2 dims wrapped around: each end padded with the other end."""

    dims, mode = 2, "circular"


class CircularPad3d(_PadNd):
    """The last 3 dims wrapped around: each end padded with the other end."""

    dims, mode = 3, "circular"


class Unfold(Module):
    """F.unfold as a layer: every kernel-sized block of (N, C, H, W) as a column."""

    def __init__(self, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1):
        super().__init__()
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, input: Tensor) -> Tensor:
        return F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)


class Fold(Module):
    """F.fold as a layer: columns summed back into an image of `output_size`."""

    def __init__(self, output_size: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1):
        super().__init__()
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, input: Tensor) -> Tensor:
        return F.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)
