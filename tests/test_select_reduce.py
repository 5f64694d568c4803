"""What the specs cannot see of the sorting, selecting, cumulative and reducing ops: the
integer results (indices, counts, tests), the named tuples, the edges where torch defines
a grad that is not a derivative (zeros in products, norms at 0, NaN extremes), second
order there, and torch's errors. Every value is compared with torch's."""

import math

import numpy as np
import pytest
import torch

import tinygraph as tg


def pair(values, requires_grad=True):
    """The same float64 data as a tinygraph leaf and a torch leaf."""
    data = torch.as_tensor(values, dtype=torch.float64)
    return tg.tensor(data, requires_grad=requires_grad), data.clone().requires_grad_(requires_grad)


def same(ours, theirs):
    if ours is None or theirs is None:
        assert ours is None and theirs is None, f"{ours} vs torch's {theirs}"
        return
    if isinstance(ours, (tuple, list)):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            same(a, b)
        return
    if isinstance(ours, tg.Tensor):
        assert ours.dtype == theirs.dtype, f"{ours.dtype} vs torch's {theirs.dtype}"
        ours, theirs = ours.data, theirs.detach()
    torch.testing.assert_close(ours, theirs, equal_nan=True, rtol=1e-12, atol=1e-12)


def grads_match(program, values, second_order=False):
    """program(lib, x) on both: values, grads and (optionally) the grads of the grads."""
    x, xt = pair(values)
    out, outt = program(tg, x), program(torch, xt)
    same(out, outt)
    (g,) = tg.grad(out.sum(), x, create_graph=second_order, allow_unused=True)
    (gt,) = torch.autograd.grad(outt.sum(), xt, create_graph=second_order, allow_unused=True)
    same(g, gt)
    if second_order:
        v = torch.linspace(-1, 1, g.numel(), dtype=torch.float64).reshape(g.shape)
        (gg,) = tg.grad((g * tg.Tensor(v)).sum(), x)
        (ggt,) = torch.autograd.grad((gt * v).sum(), xt)
        same(gg, ggt)


M = np.array([[3.0, -1.0, 2.0, -1.0], [0.5, 0.5, -2.0, 4.0], [1.0, 0.0, 0.0, -3.0]])
INTS = np.array([[3, 1, 2, 1], [0, 0, -2, 4], [1, 0, 0, -3]])


# ---- indices and other integer results ---------------------------------------------------------


PICKS = {
    "sort": lambda lib, x: x.sort(),
    "sort stable descending": lambda lib, x: lib.sort(x, dim=0, descending=True, stable=True),
    "topk": lambda lib, x: x.topk(2, largest=False),
    "kthvalue": lambda lib, x: x.kthvalue(2, 0, keepdim=True),
    "median": lambda lib, x: x.median(1),
    "nanmedian": lambda lib, x: lib.nanmedian(x, 0),
    "mode": lambda lib, x: x.mode(1),
    "max": lambda lib, x: x.max(-1),
    "min": lambda lib, x: lib.min(x, 0, keepdim=True),
    "cummax": lambda lib, x: x.cummax(1),
    "cummin": lambda lib, x: lib.cummin(x, 0),
}


@pytest.mark.parametrize("case", sorted(PICKS))
@pytest.mark.parametrize("data", [M, INTS], ids=["float", "int"])
def test_picked_values_and_indices_are_torchs(case, data):
    ours, theirs = PICKS[case](tg, tg.tensor(data)), PICKS[case](torch, torch.as_tensor(data))
    assert ours.values.dtype == theirs.values.dtype and ours.indices.dtype == torch.int64
    values, indices = ours  # a named tuple, unpacked too
    same((values, indices), (theirs.values, theirs.indices))


def test_indices_carry_no_grad_and_values_do():
    x = tg.tensor(M, requires_grad=True)
    for out in (x.sort(), x.topk(1), x.cummax(0), x.max(0), x.kthvalue(1)):
        assert out.values.requires_grad and not out.indices.requires_grad
    for out in (x.argsort(), x.argmax(), tg.count_nonzero(x), x.nonzero(), tg.isclose(x, x)):
        assert not out.requires_grad


VALUES_ONLY = {
    "argsort": lambda lib, x: x.argsort(dim=0, descending=True, stable=True),
    "nonzero": lambda lib, x: x.nonzero(),
    "nonzero as_tuple": lambda lib, x: lib.nonzero(x, as_tuple=True),
    "argwhere": lambda lib, x: lib.argwhere(x),
    "count_nonzero": lambda lib, x: x.count_nonzero(dim=(0, 1)),
    "count_nonzero dim": lambda lib, x: lib.count_nonzero(x, 1),
    "isclose": lambda lib, x: lib.isclose(x, x + 1e-9, rtol=0, atol=1e-8),
    "all dims keepdim": lambda lib, x: x.all(dim=(0, 1), keepdim=True),
    "any dim": lambda lib, x: lib.any(x, 1),
    "repeat_interleave counts": lambda lib, x: lib.repeat_interleave(lib.tensor([2, 0, 3])),
}


@pytest.mark.parametrize("case", sorted(VALUES_ONLY))
def test_functions_with_values_only_are_torchs(case):
    ours, theirs = VALUES_ONLY[case](tg, tg.tensor(M)), VALUES_ONLY[case](torch, torch.as_tensor(M))
    same(ours, theirs)


def test_python_results_are_python_values():
    x = tg.tensor(M)
    assert tg.allclose(x, x * (1 + 1e-12)) is True and x.allclose(x + 1) is False
    assert tg.equal(x, x) is True


def test_min_max_tuples_are_named():
    x, xt = pair(M)
    low, high = tg.aminmax(x, dim=1)
    same((low, high), tuple(torch.aminmax(xt, dim=1)))
    assert tg.aminmax(x).max.item() == 4.0 and x.aminmax(keepdim=True).min.shape == (1, 1)


def test_integer_results_have_torchs_dtypes():
    for dtype in (torch.int32, torch.bool, torch.int64):
        i, it = tg.tensor(INTS).to(dtype), torch.as_tensor(INTS).to(dtype)
        for program in (
            lambda lib, x: x.prod(),
            lambda lib, x: x.prod(1, dtype=torch.int32),
            lambda lib, x: x.cumsum(0),
            lambda lib, x: lib.cumprod(x, 1),
            lambda lib, x: x.sum(dtype=torch.float64),
            lambda lib, x: x.flip(0).roll(1).repeat(2, 1),
        ):
            same(program(tg, i), program(torch, it))


# ---- numpy's names for dim and keepdim ----------------------------------------------------------------


@pytest.mark.parametrize(
    "program",
    [
        lambda lib, x: x.sum(axis=1, keepdims=True),
        lambda lib, x: lib.mean(x, axis=(0, 1)),
        lambda lib, x: x.var(axis=0, keepdims=True),
        lambda lib, x: lib.std(x, axis=1),
        lambda lib, x: x.amax(axis=0) + lib.amin(x, axis=0),
        lambda lib, x: x.max(axis=1, keepdims=True).values,
        lambda lib, x: x.prod(axis=1),
        lambda lib, x: lib.logsumexp(x, axis=1),
        lambda lib, x: x.cumsum(axis=0),
        lambda lib, x: lib.softmax(x, axis=1),
        lambda lib, x: x.median(axis=1).values,
        lambda lib, x: lib.var_mean(x, axis=1, keepdims=True)[0],
    ],
)
def test_numpy_names_for_dim_and_keepdim(program):
    grads_match(program, M)


# ---- torch's grads at the edges --------------------------------------------------------------------------

EDGES = {
    "prod with one zero": (lambda lib, x: x.prod(1), [[2.0, 0.0, 3.0], [1.0, 2.0, 3.0]]),
    "prod with two zeros": (lambda lib, x: x.prod(), [[2.0, 0.0, 3.0], [0.0, 2.0, 3.0]]),
    "prod of one element": (lambda lib, x: x[:1, :1].prod(0), [[0.0, 1.0]]),
    "cumprod with zeros": (lambda lib, x: x.cumprod(1), [[2.0, 0.0, 3.0, 0.0, 5.0], [0.0, 2.0, 3.0, 1.0, 0.5]]),
    "cumprod with a zero first": (lambda lib, x: lib.cumprod(x, 0), [[0.0, 1.5], [2.0, 0.0], [3.0, 4.0]]),
    "norm at 0": (lambda lib, x: (x * 0).norm(dim=1), [[1.0, 2.0], [3.0, 4.0]]),
    "1-norm at 0": (lambda lib, x: (x * 0).norm(1), [1.0, -2.0]),
    "inf-norm with ties": (lambda lib, x: lib.linalg.vector_norm(x, math.inf), [2.0, -2.0, 1.0]),
    "-inf-norm with ties": (lambda lib, x: lib.linalg.vector_norm(x, -math.inf, 0), [1.0, -1.0, 2.0]),
    "half-norm with a zero": (lambda lib, x: x.norm(0.5), [0.0, 1.0, 4.0]),
    "3-norm at 0": (lambda lib, x: lib.linalg.vector_norm(x * 0, 3), [1.0, 2.0]),
    "0-norm": (lambda lib, x: lib.linalg.vector_norm(x, 0), [0.0, 1.0, 2.0]),
    "max with ties": (lambda lib, x: x.max(), [1.0, 3.0, 3.0]),
    "max of nan": (lambda lib, x: (x / x).max() + x.sum(), [0.0, 1.0, 0.0]),
    "median of nan": (lambda lib, x: (x / x).median() + x.sum(), [0.0, 1.0, 2.0]),
    "nanmedian with nan": (lambda lib, x: (x / x * x).nanmedian() + x.sum(), [0.0, 1.0, 2.0]),
    "amax of nan": (lambda lib, x: (x / x).amax() + x.sum(), [0.0, 1.0, 2.0]),
    "logcumsumexp of large": (lambda lib, x: lib.logcumsumexp(x, 0), [1000.0, -1000.0, 999.0]),
    "scatter_reduce amax ties": (
        lambda lib, x: x.scatter_reduce(
            0, lib.tensor([0, 0, 1]), lib.tensor([1.0, 1.0, 5.0], dtype=lib.float64), "amax"
        ),
        [1.0, 2.0],
    ),
    "scatter_reduce prod zeros": (
        lambda lib, x: lib.ones(2, dtype=lib.float64).scatter_reduce(0, lib.tensor([0, 0, 1, 1]), x, "prod"),
        [0.0, 2.0, 0.0, 0.0],
    ),
    "scatter_reduce prod zero in input": (
        lambda lib, x: x.scatter_reduce(0, lib.tensor([0, 1]), lib.tensor([3.0, 0.0], dtype=lib.float64), "prod"),
        [0.0, 2.0, 0.0],
    ),
}


@pytest.mark.parametrize("case", sorted(EDGES))
def test_grads_at_the_edges_are_torchs(case):
    program, values = EDGES[case]
    grads_match(program, values)


@pytest.mark.parametrize(
    "case", ["prod with one zero", "prod with two zeros", "cumprod with zeros", "cumprod with a zero first"]
)
def test_second_order_through_zeros_is_torchs(case):
    program, values = EDGES[case]
    grads_match(program, values, second_order=True)


def test_scatter_reduce_prod_refuses_second_order_where_two_zeros_meet_as_torch_does():
    src = tg.tensor([0.0, 0.0, 2.0], dtype=tg.float64, requires_grad=True)
    out = tg.ones(2, dtype=tg.float64).scatter_reduce(0, tg.tensor([0, 0, 1]), src, "prod")
    (g,) = tg.grad(out.sum(), src, retain_graph=True)  # first order: fine
    assert g.tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(RuntimeError, match="Double backward is unsupported"):
        tg.grad(out.sum(), src, create_graph=True)


# ---- einsum ------------------------------------------------------------------------------------------------

EINSUMS = [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk", [(2, 2, 3), (2, 3, 2)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("iij,jk->ik", [(2, 2, 3), (3, 2)]),
    ("i,i,i->", [(3,), (3,), (3,)]),
    ("ij,k->", [(2, 3), (4,)]),
    ("...j,j->...", [(2, 1, 3), (3,)]),
    ("i...,i...->...", [(2, 3), (2, 1)]),
    ("ij->ji", [(2, 3)]),
    ("iii->i", [(2, 2, 2)]),
]


@pytest.mark.parametrize("equation,shapes", EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum_values_and_grads_to_second_order(equation, shapes):
    rng = np.random.default_rng(0)
    pairs = [pair(rng.normal(size=s)) for s in shapes]
    out = tg.einsum(equation, *[p[0] for p in pairs])
    outt = torch.einsum(equation, *[p[1] for p in pairs])
    same(out, outt)
    v = torch.as_tensor(rng.normal(size=outt.shape))
    grads = tg.grad(out, [p[0] for p in pairs], v, create_graph=True)
    gradst = torch.autograd.grad(outt, [p[1] for p in pairs], v, create_graph=True)
    same(grads, gradst)
    total = sum((g * g).sum() for g in grads) + (out * out).sum()  # (a linear einsum's grads are constants)
    totalt = sum((g * g).sum() for g in gradst) + (outt * outt).sum()
    same(tg.grad(total, [p[0] for p in pairs], allow_unused=True), torch.autograd.grad(totalt, [p[1] for p in pairs]))


def test_einsum_result_is_a_new_tensor_and_torch_einsum_runs_ours():
    x = tg.tensor(M, requires_grad=True)
    t = tg.einsum("ij->ji", x)  # torch returns a view here; ours must not share x's memory
    t.data.fill_(0)
    assert x.data.abs().sum() > 0
    y = torch.einsum("ij,ij->", x, x)  # torch.einsum given tinygraph Tensors runs tinygraph's
    assert isinstance(y, tg.Tensor) and y.requires_grad
    with pytest.raises(RuntimeError):
        tg.einsum("ij,jk->ik", x, x)  # sizes disagree: torch's own error


# ---- writes at selected places -------------------------------------------------------------------------------


def test_take_with_a_0_dim_index_is_a_new_tensor_as_torchs():
    x = tg.tensor(M, requires_grad=True) * 1
    picked = x.take(tg.tensor(5))
    picked.mul_(2)  # found by the fuzzer: as a view of x, this changed x too
    assert x.data[1, 1] == M[1, 1] and picked.item() == 2 * M[1, 1]


def test_index_put_accumulates_repeated_positions():
    x, xt = pair(M)
    v, vt = pair([1.0, 2.0, 3.0, 4.0])
    index = (tg.tensor([0, 2, 0]),)
    out = x.index_put(index, v, accumulate=True)
    outt = xt.index_put((torch.tensor([0, 2, 0]),), vt, accumulate=True)
    same(out, outt)
    out.backward(tg.tensor(M * 2))
    outt.backward(torch.as_tensor(M * 2))
    same(x.grad, xt.grad)
    same(v.grad, vt.grad)
    buffer = tg.zeros(3, 4, dtype=tg.float64)
    buffer.index_put_(index, v, True)  # in place, tracked: the buffer now carries v's graph
    assert buffer.requires_grad
    with pytest.raises(TypeError, match="expected Tensor"):
        x.index_put((None, tg.tensor([0])), v)


@pytest.mark.parametrize("shape", [(), (1,), (1, 1), (2,)])
@pytest.mark.parametrize("index", ["mask", "mask after a slice", "ints", "mask and ints", "mask of every dim"])
def test_a_value_of_another_dtype_is_put_where_torchs_setitem_casts_it(index, shape):
    # found by the fuzzer: torch's index_put is masked_fill_ (which casts) for one element put
    # at a single boolean mask, and refuses mixed dtypes everywhere else; a value with more
    # dims than the region it fills (a (1, 1) into a mask of every dim) gets its grad in its shape
    mask, ints = torch.tensor([True, False, True]), torch.tensor([0, 2])
    where = {"mask": (mask,), "mask after a slice": (slice(None), mask[:2]), "ints": (ints,),
             "mask and ints": (mask, ints[:1]), "mask of every dim": (mask[:, None] ^ mask[:2],)}[index]  # fmt: skip

    def put(lib, x, v):
        y = x * 1
        y[tuple(tg.Tensor(p) if lib is tg and isinstance(p, torch.Tensor) else p for p in where)] = v
        return y

    data = torch.as_tensor(M[:3, :2], dtype=torch.float32)
    x, xt = tg.tensor(data, requires_grad=True), data.clone().requires_grad_()
    v, vt = pair(torch.full(shape, 1.5, dtype=torch.float64))
    try:
        expected = put(torch, xt, vt)
    except RuntimeError:
        with pytest.raises(RuntimeError, match="one dtype"):
            put(tg, x, v)
        return
    out = put(tg, x, v)
    same(out, expected)
    weight = torch.arange(6.0).reshape(3, 2)
    (out * tg.tensor(weight)).sum().backward()
    (expected * weight).sum().backward()
    same((x.grad, v.grad), (xt.grad, vt.grad))


def test_index_fill_with_a_tensor_value_counts_each_place_once():
    x, xt = pair(M)
    value, valuet = pair(2.5)
    out = x.index_fill(1, tg.tensor([0, 2, 0]), value)
    outt = xt.index_fill(1, torch.tensor([0, 2, 0]), valuet)
    same(out, outt)
    out.backward(tg.tensor(M))
    outt.backward(torch.as_tensor(M))
    same((x.grad, value.grad), (xt.grad, valuet.grad))


# ---- torch's errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "program,error",
    [
        (lambda lib, x: lib.fliplr(x[0]), RuntimeError),
        (lambda lib, x: lib.diag(x.reshape(1, 3, 4)), RuntimeError),
        (lambda lib, x: x.masked_select(lib.ones(3, 4)), RuntimeError),
        (lambda lib, x: x.take(lib.tensor([12])), IndexError),
        (lambda lib, x: lib.take_along_dim(x, lib.tensor([0]), 1), RuntimeError),
        (lambda lib, x: lib.meshgrid(x, x), RuntimeError),
        (lambda lib, x: x.repeat(2), RuntimeError),
        (lambda lib, x: x.roll(1, 2), IndexError),
        (lambda lib, x: x.sort(dim=2), IndexError),
        (lambda lib, x: x.topk(5), RuntimeError),
        (lambda lib, x: x.cumsum(3), IndexError),
        (lambda lib, x: x.scatter_reduce(0, lib.tensor([[0]]), x, "median"), RuntimeError),
        (lambda lib, x: x.scatter(0, lib.tensor([[0]]), x, reduce="max"), RuntimeError),
        (lambda lib, x: lib.linalg.norm(x.reshape(1, 3, 4), 2), RuntimeError),
        (lambda lib, x: lib.linalg.matrix_norm(x[0]), RuntimeError),
        (lambda lib, x: lib.linalg.matrix_norm(x, 3), RuntimeError),
        (lambda lib, x: x.repeat_interleave(lib.tensor([1, 2])), RuntimeError),
    ],
)
def test_wrong_arguments_raise_torchs_exception_types(program, error):
    with pytest.raises(error):
        program(torch, torch.as_tensor(M))
    with pytest.raises(error):
        program(tg, tg.tensor(M, requires_grad=True))


def test_matrix_norms_without_singular_values_are_named_as_unsupported():
    x = tg.tensor(M, requires_grad=True)
    for ord in ("nuc", 2, -2):
        with pytest.raises(NotImplementedError, match="singular values"):
            tg.linalg.matrix_norm(x, ord)
    with pytest.raises(NotImplementedError, match="nuc"):
        x.norm("nuc")


# ---- found by the fuzzer on this branch (an engine bug, fixed on main since) -------------------------------


def test_x_mul_x_in_place_is_refused_at_backward_as_torch_does():
    x, xt = pair([1.0, 2.0])
    y, yt = x * 1, xt * 1
    y.mul_(y)  # Mul saved y itself as its second input; the write makes that value stale
    yt.mul_(yt)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        yt.sum().backward()
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()  # before the fix: it ran, and x.grad was [2, 6] where d(x*x)/dx is [2, 4]
