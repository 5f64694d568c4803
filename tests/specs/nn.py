"""Specs of the neural-network ops (tinygraph/ops/nn.py)."""

import math

import numpy as np
import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Const, Diff, Spec, away_from_zero, dims_of, grid, nonscalar_shapes, values


@st.composite
def linear_inputs(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    fan_in, fan_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    bias = Diff(draw(values((fan_out,)))) if draw(st.booleans()) else None
    return (Diff(draw(values((*lead, fan_in)))), Diff(draw(values((fan_out, fan_in)))), bias), {}


@st.composite
def embedding_inputs(draw, padding=False):
    vocab, width = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    ids_shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4))
    ids = draw(hnp.arrays(np.int64, ids_shape, elements=st.integers(0, vocab - 1)))
    kwargs = {"padding_idx": draw(st.integers(-vocab, vocab - 1))} if padding else {}
    return (Const(ids), Diff(draw(values((vocab, width))))), kwargs


@st.composite
def softmax_inputs(draw):
    shape = draw(nonscalar_shapes)
    return (Diff(draw(values(shape))),), {"dim": draw(st.integers(-len(shape), len(shape) - 1))}


@st.composite
def layer_norm_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
    normalized = shape[len(shape) - draw(st.integers(1, len(shape))) :]
    affine = [Diff(draw(values(normalized))) if draw(st.booleans()) else None for _ in range(2)]
    return (Diff(draw(values(shape))), normalized, *affine), {}


@st.composite
def rms_norm_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    normalized = shape[len(shape) - draw(st.integers(1, len(shape))) :]
    weight = Diff(draw(values(normalized))) if draw(st.booleans()) else None
    kwargs = {"eps": draw(st.sampled_from([1e-6, 0.5]))} if draw(st.booleans()) else {}
    return (Diff(draw(away_from_zero(shape))), normalized, weight), kwargs


@st.composite
def normalize_inputs(draw):
    shape = draw(nonscalar_shapes)
    kwargs = {"p": draw(st.sampled_from([2.0, 1, 3.0, math.inf, 0.5])), "dim": draw(dims_of(len(shape), False))}
    if draw(st.booleans()):
        kwargs["eps"] = 0.75  # some norms are clamped (a one-element norm is |x|, 0.02 away from it at least)
    # 0.1 apart, 0.03 off the multiples of 0.1: no element near 0, no two of equal magnitude (p = inf)
    return (Diff(draw(grid(shape, 0.03))),), kwargs


@st.composite
def cosine_inputs(draw, eps=None):
    a, b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3, max_side=3)).input_shapes
    ndim = max(len(a), len(b))
    kwargs = {"dim": draw(st.integers(-ndim, ndim - 1))}
    if eps:
        kwargs["eps"] = eps
    return (Diff(draw(away_from_zero(a))), Diff(draw(away_from_zero(b)))), kwargs


@st.composite
def cross_entropy_inputs(draw, options=True):
    kind = draw(st.sampled_from(["rows", "rows", "unbatched", "spatial", "probabilities"]))
    classes = draw(st.integers(1, 4))
    target_shape = {
        "rows": (draw(st.integers(1, 4)),),
        "unbatched": (),
        "spatial": (draw(st.integers(1, 2)), draw(st.integers(1, 3))),
        "probabilities": (draw(st.integers(1, 3)),),
    }[kind]
    logits_shape = (classes,) if kind == "unbatched" else (target_shape[0], classes, *target_shape[1:])
    kwargs = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if options and draw(st.booleans()):
        kwargs["weight"] = Const(draw(values((classes,), 0.2, 2.0)))
    if options and draw(st.booleans()):
        kwargs["label_smoothing"] = draw(st.sampled_from([0.1, 0.5]))
    if kind == "probabilities":
        target = Const(draw(values(logits_shape, 0.0, 1.0)))
        return (Diff(draw(values(logits_shape))), target), kwargs
    target = draw(hnp.arrays(np.int64, target_shape, elements=st.integers(0, classes - 1)))
    if kind != "unbatched" and draw(st.booleans()):
        target.reshape(-1)[draw(st.integers(0, target.size - 1))] = -100  # one ignored target
    if kwargs["reduction"] == "mean":
        assume((target != -100).any())
    return (Diff(draw(values(logits_shape))), Const(target)), kwargs


def _cross_entropy(lib, F, x, t, **kw):
    return F.cross_entropy(x, t, **kw)


@st.composite
def attention_inputs(draw):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=2))
    L, S, E, Ev = (draw(st.integers(1, 3)) for _ in range(4))
    kind = draw(st.sampled_from(["plain", "causal", "bool_mask", "float_mask", "learned_mask"]))
    kwargs: dict = {"is_causal": kind == "causal"}
    if kind == "causal":
        S = L
    args = [Diff(draw(values((*batch, L, E)))), Diff(draw(values((*batch, S, E)))), Diff(draw(values((*batch, S, Ev))))]
    if kind == "bool_mask":
        mask = draw(hnp.arrays(np.bool_, (L, S)))
        mask[:, 0] = True  # every query sees at least one key
        args.append(Const(mask))
    elif kind == "float_mask":
        args.append(Const(draw(values((L, S)))))
    elif kind == "learned_mask":  # an attention bias that requires grad
        args.append(Diff(draw(values((L, S)))))
    if draw(st.booleans()):
        kwargs["scale"] = draw(st.floats(0.2, 1.5))
    return tuple(args), kwargs


@st.composite
def packed_attention_inputs(draw):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=2))
    L, H, E = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kwargs = {"is_causal": draw(st.booleans())}
    if draw(st.booleans()):
        kwargs["scale"] = draw(st.floats(0.2, 1.5))
    return (Diff(draw(values((*batch, L, 3, H, E)))),), kwargs


def _packed_attention_torch(lib, F, qkv, **kwargs):
    q, k, v = (t.transpose(-3, -2) for t in qkv.unbind(-3))
    return F.scaled_dot_product_attention(q, k, v, **kwargs).transpose(-3, -2)


@st.composite
def dropout_inputs(draw):
    shape = draw(nonscalar_shapes)
    return (Diff(draw(values(shape))),), {"p": draw(st.sampled_from([0.2, 0.5])), "seed": draw(st.integers(0, 2**16))}


def _dropout_tg(lib, F, x, p, seed):
    torch.manual_seed(seed)
    return F.dropout(x, p)


def _dropout_torch(lib, F, x, p, seed):
    torch.manual_seed(seed)  # the same random draws as tinygraph's forward: one rand_like
    return x * (torch.rand_like(x) >= p) / (1 - p)


@st.composite
def lstm_cell_inputs(draw):
    B, H = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shapes4 = [(B, 4 * H), (B, H), (B, H), (4 * H, H)]
    return tuple(Diff(draw(values(s, -1.5, 1.5))) for s in shapes4), {}


def _lstm_cell_torch(lib, F, gates_x, h, c, w):
    from tinygraph.ops.nn import lstm_cell_composite  # written with methods torch shares

    return lstm_cell_composite(gates_x, h, c, w)


@st.composite
def lstm_sequence_inputs(draw):
    B, T, H = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    shapes = [(B, T, 4 * H), (B, H), (B, H), (4 * H, H)]
    return tuple(Diff(draw(values(s, -1.5, 1.5))) for s in shapes), {}


def _lstm_sequence_torch(lib, F, gates_x, h, c, w):
    outputs = []
    for gates_x_t in gates_x.unbind(1):
        h, c = _lstm_cell_torch(lib, F, gates_x_t, h, c, w)
        outputs.append(h)
    return lib.stack(outputs, 1), h, c


def _lstm_sequence(lib, F, gates_x, h, c, w):
    from tinygraph.ops.nn import LSTMSequence

    return LSTMSequence.apply(gates_x, h, c, w)


SPECS = {
    "Linear": [Spec(linear_inputs(), lambda lib, F, x, w, b: F.linear(x, w, b))],
    "Embedding": [
        Spec(embedding_inputs(), lambda lib, F, ids, w: F.embedding(ids, w)),
        Spec(  # the padding row gets no grad, by torch's definition (not the derivative's)
            embedding_inputs(padding=True),
            lambda lib, F, ids, w, padding_idx: F.embedding(ids, w, padding_idx),
            finite_differences=False,
        ),
    ],
    "Softmax": [Spec(softmax_inputs(), lambda lib, F, x, dim: F.softmax(x, dim))],
    "LogSoftmax": [Spec(softmax_inputs(), lambda lib, F, x, dim: F.log_softmax(x, dim))],
    "Dropout": [Spec(dropout_inputs(), _dropout_tg, torch_call=_dropout_torch)],
    "LayerNorm": [
        Spec(
            layer_norm_inputs(), lambda lib, F, x, shape, w, b: F.layer_norm(x, shape, w, b), tolerances={"atol": 1e-4}
        )
    ],
    "RMSNorm": [
        Spec(rms_norm_inputs(), lambda lib, F, x, shape, w, **kw: F.rms_norm(x, shape, w, **kw)),
        Spec(rms_norm_inputs(), lambda lib, F, x, shape, w, **kw: lib.rms_norm(x, shape, w, **kw)),
    ],
    "Normalize": [Spec(normalize_inputs(), lambda lib, F, x, **kw: F.normalize(x, **kw))],
    "CosineSimilarity": [
        Spec(cosine_inputs(), lambda lib, F, a, b, **kw: F.cosine_similarity(a, b, **kw)),
        # torch clamps the norms outside autograd: where it does (norm < eps), its grad is not the
        # derivative of the value, so only torch's own grads are the reference
        Spec(
            cosine_inputs(eps=1.5),
            lambda lib, F, a, b, **kw: lib.cosine_similarity(a, b, **kw),
            finite_differences=False,
        ),
    ],
    "CrossEntropy": [Spec(cross_entropy_inputs(), _cross_entropy)],
    "LSTMCell": [
        Spec(lstm_cell_inputs(), lambda lib, F, gx, h, c, w: F.lstm_cell(gx, h, c, w), torch_call=_lstm_cell_torch),
        Spec(
            lstm_cell_inputs(),
            lambda lib, F, gx, h, c, w: F.lstm_cell(gx, h, c, w)[1],
            torch_call=lambda lib, F, *a: _lstm_cell_torch(lib, F, *a)[1],
        ),
    ],
    "LSTMSequence": [
        Spec(lstm_sequence_inputs(), _lstm_sequence, torch_call=_lstm_sequence_torch),
        Spec(  # the last c alone: the other outputs' grads are zeros
            lstm_sequence_inputs(),
            lambda lib, F, *a: _lstm_sequence(lib, F, *a)[2],
            torch_call=lambda lib, F, *a: _lstm_sequence_torch(lib, F, *a)[2],
        ),
    ],
    "PackedAttention": [
        Spec(
            packed_attention_inputs(),
            lambda lib, F, qkv, **kw: F.attention_qkvpacked(qkv, **kw),
            torch_call=_packed_attention_torch,
        )
    ],
    "ScaledDotProductAttention": [
        Spec(
            attention_inputs(),
            lambda lib, F, q, k, v, mask=None, **kw: F.scaled_dot_product_attention(q, k, v, mask, **kw),
        )
    ],
}
