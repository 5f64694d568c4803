"""PyTorch's semantics in the compositions where each op alone is right but the engine can
still go wrong: one named regression test per class of bug (all found by trying them)."""

import math
import threading

import numpy as np
import pytest
import torch

import tinygraph as tg
import tinygraph.nn.functional as F


def pair(values, requires_grad=True):
    """The same float64 data as a tinygraph leaf and a torch leaf."""
    data = torch.as_tensor(values, dtype=torch.float64)
    return tg.tensor(data, requires_grad=requires_grad), data.clone().requires_grad_(requires_grad)


def same(ours, theirs):
    theirs = theirs.detach() if isinstance(theirs, torch.Tensor) else torch.as_tensor(theirs)
    torch.testing.assert_close(ours.data if isinstance(ours, tg.Tensor) else ours, theirs, equal_nan=True)


# ---- aliasing ---------------------------------------------------------------------------------


def shares_memory(a, b):
    return a.data.untyped_storage().data_ptr() == b.data.untyped_storage().data_ptr()


@pytest.mark.parametrize(
    "program",
    [
        lambda a, b: a.clone() + b.clone(),  # Add hands one grad to two Clones, which pass it on
        lambda a, b: a - b.clone(),
        lambda a, b: a.expand(2, 2).sum(0) + b.expand(2, 2).sum(0),
        lambda a, b: (a + b).clone(),
    ],
)
def test_no_two_leaf_grads_share_memory(program):
    a, b = tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([3.0, 4.0], requires_grad=True)
    program(a, b).sum().backward()
    assert not shares_memory(a.grad, b.grad)
    before = b.grad.tolist()
    a.grad.data.add_(1)  # a later accumulation into one must not change the other
    assert b.grad.tolist() == before


def test_a_leaf_grad_never_shares_memory_with_the_given_gradient():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    g = torch.tensor([1.0, 1.0])
    x.clone().backward(g)
    x.grad.data.add_(1)
    assert g.tolist() == [1.0, 1.0]
    y = tg.tensor([1.0, 2.0], requires_grad=True)
    y.backward(g)  # a leaf as its own root
    assert not shares_memory(y.grad, tg.Tensor(g))


def test_aliasing_under_create_graph_too():
    a, b = tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([3.0, 4.0], requires_grad=True)
    (a.clone() + b.clone()).sum().backward(create_graph=True)
    assert a.grad is not b.grad and not shares_memory(a.grad, b.grad)


# ---- several roots ----------------------------------------------------------------------------


def test_a_root_computed_from_another_root():
    (x, xt) = pair([1.0, 2.0])
    y, yt = x * 3, xt * 3
    y2, y2t = (y * y).sum(), (yt * yt).sum()
    tg.backward([y2, y.sum()])
    torch.autograd.backward([y2t, yt.sum()])
    same(x.grad, xt.grad)
    (x2, x2t) = pair([1.0, 2.0])
    y, yt = x2 * 3, x2t * 3
    (g,) = tg.grad([(y * y).sum(), y.sum()], x2)
    (gt,) = torch.autograd.grad([(yt * yt).sum(), yt.sum()], x2t)
    same(g, gt)


def test_create_graph_through_a_multi_output_fused_op_uses_both_outputs():
    args = [tg.randn(2, 8, dtype=tg.float64, requires_grad=True) for _ in range(1)]
    h0, c0 = tg.randn(2, 2, dtype=tg.float64, requires_grad=True), tg.randn(2, 2, dtype=tg.float64, requires_grad=True)
    w = tg.randn(8, 2, dtype=tg.float64, requires_grad=True)
    h, c = F.lstm_cell(args[0], h0, c0, w)
    grads = tg.grad((h * c).sum(), [h0, c0, w], create_graph=True)
    theirs = [t.data.clone().requires_grad_() for t in (args[0], h0, c0, w)]
    from tinygraph.ops.nn import lstm_cell_composite

    ht, ct = lstm_cell_composite(*theirs)
    grads_t = torch.autograd.grad((ht * ct).sum(), theirs[1:], create_graph=True)
    for a, b in zip(grads, grads_t):
        same(a, b)


# ---- create_graph and detach ----------------------------------------------------------------------


def test_a_detached_alias_stays_a_constant_under_create_graph():
    x, xt = pair([0.5, -1.5, 2.0])
    (g,) = tg.grad((x * x.detach()).sum(), x, create_graph=True)
    (gt,) = torch.autograd.grad((xt * xt.detach()).sum(), xt, create_graph=True)
    same(g, gt)
    assert not g.requires_grad and not gt.requires_grad  # g = x.detach(): no second derivative
    (g,) = tg.grad((x * x.detach() + x * x).sum(), x, create_graph=True)
    (gg,) = tg.grad(g.sum(), x)
    (gt,) = torch.autograd.grad((xt * xt.detach() + xt * xt).sum(), xt, create_graph=True)
    (ggt,) = torch.autograd.grad(gt.sum(), xt)
    same(gg, ggt)


def test_detach_shares_memory_and_version_but_not_the_graph():
    x = tg.tensor([1.0, 2.0], requires_grad=True) * 1
    d = x.detach()
    assert d.is_leaf and not d.requires_grad and shares_memory(x, d) and d.data is not x.data


# ---- indexing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "index", [np.array([0, 2, 0, 0]), [0, 2, 0, 0], torch.tensor([0, 2, 0, 0]), (np.array([1, 1]), slice(None))]
)
def test_repeated_indices_accumulate_whatever_they_are_written_with(index):
    x, xt = pair(np.arange(12.0).reshape(3, 4))
    ti = (
        tuple(torch.as_tensor(p) if isinstance(p, np.ndarray) else p for p in index)
        if isinstance(index, tuple)
        else index
    )
    tt = torch.as_tensor(ti) if isinstance(ti, (list, np.ndarray)) else ti
    x[tg.Tensor(index) if isinstance(index, torch.Tensor) else index].sum().backward()
    xt[tt].sum().backward()
    same(x.grad, xt.grad)


def test_numpy_integer_scalars_index_like_ints():
    x, xt = pair([1.0, 2.0, 3.0])
    same(x[np.int64(1)], xt[1])


# ---- writing grad-requiring values into tensors ---------------------------------------------------


def test_writing_a_grad_requiring_value_into_a_buffer_is_tracked():
    y, yt = pair([1.0, 2.0])
    buf, buft = tg.zeros(3, dtype=tg.float64), torch.zeros(3, dtype=torch.float64)
    buf[1:] = y * 2
    buft[1:] = yt * 2
    assert buf.requires_grad and not buf.is_leaf
    (buf * buf).sum().backward()
    (buft * buft).sum().backward()
    same(y.grad, yt.grad)


@pytest.mark.parametrize("method", ["copy_", "add_", "mul_", "sub_"])
def test_in_place_methods_with_a_grad_requiring_argument_are_tracked(method):
    y, yt = pair([1.0, 2.0, 3.0])
    buf, buft = tg.ones(3, dtype=tg.float64), torch.ones(3, dtype=torch.float64)
    getattr(buf, method)(y.exp())
    getattr(buft, method)(yt.exp())
    (buf * 3).sum().backward()
    (buft * 3).sum().backward()
    same(buf, buft)
    same(y.grad, yt.grad)


def test_masked_fill_with_a_tensor_value_sends_it_a_grad():
    x, xt = pair([1.0, 2.0, 3.0])
    v, vt = pair(0.5)
    mask = torch.tensor([True, False, True])
    (x.masked_fill(tg.Tensor(mask), v) * x).sum().backward()
    (xt.masked_fill(mask, vt) * xt).sum().backward()
    same(v.grad, vt.grad)
    same(x.grad, xt.grad)


def test_writes_through_a_view_reach_the_base_and_other_views():
    x, xt = pair(np.arange(6.0).reshape(2, 3))
    base, baset = x * 1, xt * 1
    first, firstt = base[0], baset[0]  # made before the write: must see it
    col, colt = base[:, 1], baset[:, 1]
    col.mul_(10)
    colt.mul_(10)
    out, outt = (first * base).sum() + col.sum(), (firstt * baset).sum() + colt.sum()
    same(out, outt)
    out.backward()
    outt.backward()
    same(x.grad, xt.grad)


def test_augmented_assignment_through_an_index():
    x, xt = pair(np.arange(6.0).reshape(2, 3))
    b, bt = pair([1.0, 2.0])
    out, outt = x * 1, xt * 1
    out[:, 0] += b
    outt[:, 0] += bt
    (out * out).sum().backward()
    (outt * outt).sum().backward()
    same(x.grad, xt.grad)
    same(b.grad, bt.grad)


def test_in_place_change_of_a_leaf_that_requires_grad_is_refused_as_in_torch():
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        w.add_(1)
    with pytest.raises(RuntimeError, match="view of a leaf"):
        w[0:1].mul_(2)


# ---- in-place operators -------------------------------------------------------------------------------


def test_an_update_in_place_under_no_grad_changes_the_parameter_itself():
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    same_object, version = w, w.data._version
    with tg.no_grad():
        w -= 0.1 * w.grad
        w *= 2
        w += 1
        w /= 2
    assert w is same_object and w.is_leaf and w.requires_grad and w.grad_fn is None
    assert w.data._version > version
    torch.testing.assert_close(w.data, ((torch.tensor([1.0, 2.0]) * 0.8) * 2 + 1) / 2)


def test_an_in_place_change_of_a_saved_value_is_caught_at_backward():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    y = h * h  # saves h
    h.add_(1)  # tracked: h's history continues, but y's saved h is stale
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()


# ---- grad modes -------------------------------------------------------------------------------------------


def test_set_grad_enabled_called_as_a_function_switches_recording():
    x = tg.tensor([1.0], requires_grad=True)
    try:
        tg.set_grad_enabled(False)
        assert not (x * 2).requires_grad and not tg.is_grad_enabled()
    finally:
        tg.set_grad_enabled(True)
    assert (x * 2).requires_grad


def test_grad_mode_is_per_thread():
    x = tg.tensor([1.0], requires_grad=True)
    seen = {}

    def other():
        seen["enabled"] = tg.is_grad_enabled()
        seen["recorded"] = (x * 2).requires_grad

    with tg.no_grad():
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert seen == {"enabled": True, "recorded": True}


def test_inference_mode_records_nothing():
    x = tg.tensor([1.0], requires_grad=True)
    with tg.inference_mode():
        assert not (x * 2).requires_grad and tg.is_inference_mode_enabled()

    @tg.inference_mode()
    def f(t):
        return t * 2

    assert not f(x).requires_grad and tg.is_grad_enabled()


# ---- torch's values at the edges -------------------------------------------------------------------


EDGES = {
    "0 ** x": lambda lib, x: (0.0**x).sum(),
    "tensor 0 ** x": lambda lib, x: (x * 0) ** x,
    "x ** 0": lambda lib, x: (x**0).sum(),
    "x ** 0 at 0": lambda lib, x: ((x * 0) ** 0).sum(),
    "negative ** x": lambda lib, x: ((-2.0) ** x).sum(),
    "var over one element": lambda lib, x: x[:1].var(),
    "var with no degrees of freedom": lambda lib, x: x.var(correction=5),
    "std of a constant": lambda lib, x: (x * 0 + 1).std(),
    "clamp of nan": lambda lib, x: (x / x * 0 / 0).clamp(-1, 1).sum() + x.sum(),
    "clamp with min > max": lambda lib, x: x.clamp(2, 1).sum(),
}


@pytest.mark.parametrize("case", sorted(EDGES))
def test_values_and_grads_at_the_edges_are_torchs(case):
    x, xt = pair([0.0, 1.0, -1.0, 2.0])
    out, outt = EDGES[case](tg, x), EDGES[case](torch, xt)
    same(out, outt)
    out.sum().backward()
    outt.sum().backward()
    same(x.grad, xt.grad)


def test_kl_div_second_derivative_of_a_tiny_target_is_torchs():
    # found by the fuzzer: d/dt of the target's grad is 1/t (-1e203 here), not an overflow
    def second(lib, t):
        (g,) = lib.autograd.grad(lib.nn.functional.kl_div(t * 0.5, t, reduction="sum"), t, create_graph=True)
        return lib.autograd.grad(g.sum(), t)[0]

    t, tt = pair([0.0, -1e-203, 0.3])
    same(second(tg, t), second(torch, tt))


def test_prod_second_derivative_with_a_tiny_element_is_exact():
    # found by the fuzzer, where torch's is wrong (its formula divides by the element): the
    # Hessian of prod is, off its diagonal, the product of the other elements
    x0 = torch.tensor([-0.7165, -6.1e-5, -1.6273, 2.4e-240], dtype=torch.float64)
    w = torch.tensor([0.3, -1.2, 0.7, 0.9], dtype=torch.float64)
    x = tg.Tensor(x0.clone(), requires_grad=True)
    (g,) = tg.grad(x.prod(), x, create_graph=True)
    (second,) = tg.grad((g * w).sum(), x)
    others = [
        [math.prod(x0[k].item() for k in range(4) if k not in (i, j)) if i != j else 0.0 for j in range(4)]
        for i in range(4)
    ]
    torch.testing.assert_close(second.data, torch.tensor(others, dtype=torch.float64) @ w, rtol=1e-12, atol=0)


def test_cumprod_second_derivative_with_tiny_elements_is_exact():
    # found by the fuzzer, where torch's is wrong (8.2e98 and 0 here: its formula divides by
    # the element); cumprod is a polynomial, so central differences of the first derivative
    # are exact to rounding
    x0 = torch.tensor([[1.0654, -1.2615, -0.5], [-2.0, 1.3268e-198, 1.4183], [-9.4499e-116, -1.1255, 0.63248]],
                      dtype=torch.float64)  # fmt: skip
    w = torch.linspace(-1, 1, 9, dtype=torch.float64).reshape(3, 3)
    v = torch.linspace(0.5, -0.7, 9, dtype=torch.float64).reshape(3, 3)

    def first(x0, create_graph=False):
        x = tg.Tensor(x0.clone(), requires_grad=True)
        (g,) = tg.grad((x.cumprod(1) * tg.Tensor(w)).sum(), x, create_graph=create_graph)
        return x, g

    x, g = first(x0, create_graph=True)
    (second,) = tg.grad((g * tg.Tensor(v)).sum(), x)
    eps, expected = 1e-6, torch.zeros_like(x0)
    for i, j in np.ndindex(3, 3):
        step = torch.zeros_like(x0)
        step[i, j] = eps
        expected[i, j] = ((first(x0 + step)[1].data - first(x0 - step)[1].data) * v).sum() / (2 * eps)
    torch.testing.assert_close(second.data, expected, rtol=1e-6, atol=1e-9)


def test_a_cosine_similarity_input_without_grad_may_change_in_place_before_backward():
    # found by the fuzzer: the fused op kept x1 itself where torch's composite keeps x1 / ||x1||
    # (a new tensor), so an in-place change of x1 stopped our backward and not torch's
    def grad(lib, x1, x2):
        cos = lib.nn.functional.cosine_similarity(x1, x2, 1)
        x1.add_(1.0)
        return lib.autograd.grad(cos.sum(), x2)[0]

    x1, x2 = [[[0.3]], [[-1.2]], [[0.7]]], [[[0.5, -0.4], [1.1, 0.2], [-0.3, 0.9]]]
    x2_tg, x2_t = pair(x2)
    same(grad(tg, tg.tensor(x1, dtype=tg.float64), x2_tg), grad(torch, torch.tensor(x1, dtype=torch.float64), x2_t))


def test_atan2_grads_where_the_squares_underflow_are_torchs():
    # found by the fuzzer: 0 / 0 made nan where torch's grad is 0 (the origin, x = 5e-324)
    def grads(lib, y, x):
        return lib.autograd.grad(lib.atan2(y, x).sum(), (y, x))

    ys, xs = [0.0, 1e-200, 0.0, 3.0], [0.0, 0.0, 5e-324, 4.0]
    y, yt = pair(ys)
    x, xt = pair(xs)
    for ours, theirs in zip(grads(tg, y, x), grads(torch, yt, xt)):
        same(ours, theirs)


def test_a_number_over_a_tensor_keeps_the_reciprocal_as_torch():
    # found by the fuzzer: 0.5 / b kept b for backward here, so changing b in place before it
    # was refused; torch computes 1/b * 0.5 and keeps 1/b, and so does this now
    def run(lib, b):
        y = 0.5 / b
        b.detach().mul_(3)  # a change of b's memory after the division
        y.sum().backward()
        return y

    b, bt = pair([2.0, -4.0])
    same(run(tg, b), run(torch, bt))
    same(b.grad, bt.grad)


@pytest.mark.parametrize("divide", ["tensor / tensor", "number / tensor", "reciprocal"])
def test_a_zero_grad_through_an_overflowing_quotient_is_torchs(divide):
    # found by the fuzzer: a value overwritten by fill_ sends a zero grad back, and the divisor's
    # grad of 0.8 / b at b = -7e-225 is 0 * inf: nan in torch, where ours had grouped it as 0
    calls = {"tensor / tensor": lambda lib, b: lib.full_like(b, 0.8) / b, "number / tensor": lambda lib, b: 0.8 / b,
             "reciprocal": lambda lib, b: b.reciprocal() * 1}  # fmt: skip

    def grad(lib, b):
        out = calls[divide](lib, b * 1)
        out.fill_(0.25)
        return lib.autograd.grad(out.sum(), b)[0]

    b, bt = pair([-7e-225, 2.0])
    same(grad(tg, b), grad(torch, bt))


@pytest.mark.parametrize("pick", ["median", "nanmedian", "max", "min", "amax"])
def test_a_nan_grad_through_a_picked_element_is_torchs(pick):
    # found by the fuzzer: median's other elements got nan * 0 = nan where torch's get 0
    x, xt = pair([-1.2, -1.7, 1.5])
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    same(tg.grad(getattr(x, pick)(), x, nan)[0], torch.autograd.grad(getattr(xt, pick)(), xt, nan)[0])


def test_a_nan_grad_stays_out_of_an_off_relu():
    # found by the fuzzer: copysign's second derivative at 0 is nan (in torch too), and a relu
    # before it gave nan * 0 = nan where torch's relu selects 0
    nan = torch.tensor([float("nan"), float("nan")], dtype=torch.float64)
    x, xt = pair([-1.08, 0.5])
    same(tg.grad(x.relu(), x, nan)[0], torch.autograd.grad(xt.relu(), xt, nan)[0])

    def second(lib, x):
        r = x.relu()
        (g,) = lib.autograd.grad(r.copysign(-1.81).sum(), r, create_graph=True)
        return lib.autograd.grad(g.sum(), x)[0]

    same(second(tg, x), second(torch, xt))


def test_an_exact_zero_cross_entropy_has_torchs_sign():
    # found by the fuzzer: -log p at p = 1 is -0.0 in torch (1 / loss = -inf), and was +0.0 here
    x, xt = pair([[0.3], [0.7]])
    target = torch.tensor([0, 0])
    for kw in ({}, {"weight": torch.tensor([1.1], dtype=torch.float64)}, {"label_smoothing": 0.1}):
        ours_kw = {k: tg.Tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        ours = F.cross_entropy(x, tg.Tensor(target), reduction="none", **ours_kw)
        same(1 / ours, 1 / torch.nn.functional.cross_entropy(xt, target, reduction="none", **kw))


def test_cross_entropy_with_every_target_ignored_is_nan_with_zero_grads():
    x, xt = pair(np.ones((3, 4)))
    for kw in ({}, {"label_smoothing": 0.2}):
        loss, losst = (
            F.cross_entropy(x, tg.tensor([-100, -100, -100]), **kw),
            torch.nn.functional.cross_entropy(xt, torch.tensor([-100, -100, -100]), **kw),
        )
        same(loss, losst)
        loss.backward()
        losst.backward()
        same(x.grad, xt.grad)


def test_retain_grad_on_an_unused_output_of_a_multi_output_op():
    x = tg.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    a, b = x.split(2)
    b.retain_grad()
    a.sum().backward()
    assert b.grad is None and x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_grad_of_the_same_input_listed_twice():
    x, xt = pair([1.0, 2.0])
    g1, g2 = tg.grad((x * x).sum(), [x, x])
    t1, t2 = torch.autograd.grad((xt * xt).sum(), [xt, xt])
    same(g1, t1)
    same(g2, t2)


# ---- every op records itself ----------------------------------------------------------------------------


def test_a_given_grad_takes_its_outputs_dtype():
    # found by the fuzzer: a float64 grad given for a float32 output is cast to float32, as torch's
    def run(lib, x):
        y = (x * 2).float()
        return lib.autograd.grad(y, [y, x], torch.ones(2, dtype=torch.float64))

    x = torch.ones(2, dtype=torch.float64)
    ours, theirs = run(tg, tg.Tensor(x, requires_grad=True)), run(torch, x.clone().requires_grad_())
    assert [g.dtype for g in ours] == [g.dtype for g in theirs] == [torch.float32, torch.float64]


def test_a_fused_op_given_one_input_twice_under_create_graph():
    # found by the fuzzer: create_graph differentiates the composite, where the input is one
    # tensor; its grad was counted once per position it was passed in (twice torch's)
    from tinygraph.ops.nn import lstm_cell_composite

    gates, h, w = (torch.randn(*s, dtype=torch.float64) for s in ((2, 8), (2, 2), (8, 2)))
    ht = tg.Tensor(h, requires_grad=True)
    (ours,) = tg.grad(F.lstm_cell(tg.Tensor(gates), ht, ht, tg.Tensor(w))[1].exp().sum(), [ht], create_graph=True)
    hh = h.clone().requires_grad_()
    (theirs,) = torch.autograd.grad(lstm_cell_composite(gates, hh, hh, w)[1].exp().sum(), [hh])
    torch.testing.assert_close(ours.data, theirs)


def test_tril_and_triu_are_recorded():
    x, xt = pair(np.arange(9.0).reshape(3, 3))
    (x.tril() * 3 + x.triu(1)).sum().backward()
    (xt.tril() * 3 + xt.triu(1)).sum().backward()
    same(x.grad, xt.grad)


def test_a_learned_attention_bias_gets_its_grad():
    q, qt = pair(np.random.default_rng(0).normal(size=(2, 3, 4)))
    bias, biast = pair(np.random.default_rng(1).normal(size=(3, 3)))
    F.scaled_dot_product_attention(q, q, q, bias).sum().backward()
    torch.nn.functional.scaled_dot_product_attention(qt, qt, qt, biast).sum().backward()
    same(bias.grad, biast.grad)
    same(q.grad, qt.grad)


# ---- derived ops at the edges -------------------------------------------------------------------------------


def test_min_of_the_smallest_int32_and_of_bools():
    i = tg.tensor([-(2**31), 5], dtype=tg.int32)
    assert i.min().item() == -(2**31) and i.amin().item() == -(2**31)
    assert tg.tensor([True, False]).min().item() is False


def test_matmul_of_vectors_of_different_lengths_raises_as_torch_does():
    with pytest.raises(RuntimeError, match="inconsistent tensor size"):
        tg.randn(3) @ tg.randn(1)
    with pytest.raises(RuntimeError):
        tg.randn(3) @ tg.randn(2, 4)


def test_wrong_arguments_raise_torchs_exception_types():
    x = tg.randn(4)
    with pytest.raises(RuntimeError):
        x.split([1, 2])
    with pytest.raises(RuntimeError):
        x.clamp()
    with pytest.raises(IndexError):
        x.sum(3)
    with pytest.raises(ValueError):
        F.cross_entropy(tg.randn(2, 3), tg.tensor([0, 1]), reduction="nope")


def test_an_unsupported_argument_is_a_sentence_naming_it():
    with pytest.raises(TypeError, match=r"tinygraph.exp\(\).*'out'"):
        tg.exp(tg.randn(2), out=tg.randn(2))
    with pytest.raises(TypeError, match=r"Tensor\.sum"):
        tg.randn(2).sum(0, dtype=torch.float64, bogus=1)


# ---- torch functions given tinygraph Tensors -------------------------------------------------------------------


def test_torch_functions_given_tinygraph_tensors_run_tinygraphs():
    a, b = tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([3.0], requires_grad=True)
    joined = torch.cat([a, b])
    assert isinstance(joined, tg.Tensor) and joined.requires_grad
    torch.nn.functional.gelu(joined).sum().backward()
    assert a.grad is not None and b.grad is not None
    with pytest.raises(TypeError, match="tinygraph has no"):
        torch.fft.fft(a)


# ---- hooks and backward(inputs=) --------------------------------------------------------------------------------


def test_register_hook_sees_and_replaces_grads_as_torchs_does():
    x, xt = pair([1.0, 2.0])
    h, ht = x * 3, xt * 3
    seen, seen_t = [], []
    h.register_hook(lambda g: (seen.append(g.tolist()), g * 2)[1])
    ht.register_hook(lambda g: (seen_t.append(g.tolist()), g * 2)[1])
    x.register_hook(lambda g: g + 1)
    xt.register_hook(lambda g: g + 1)
    ((h * h).sum() + h.sum()).backward()
    ((ht * ht).sum() + ht.sum()).backward()
    assert seen == seen_t
    same(x.grad, xt.grad)


def test_a_grad_a_hook_was_handed_is_not_changed_by_a_later_backward():
    # the leaf's grad is accumulated in place from the second backward on: it must not be
    # the very tensor a hook kept (a Linear's bias gets its output's grad itself when they
    # have one shape; the review found a kept grad doubled)
    x, w, b, c = tg.randn(16), tg.randn(24, 16, requires_grad=True), tg.randn(24, requires_grad=True), tg.randn(24)
    kept_by_output, kept_by_leaf = [], []
    b.register_hook(lambda g: kept_by_leaf.append(g))
    for i in range(2):
        out = tg.nn.functional.linear(x, w, b)
        if i == 0:
            out.register_hook(lambda g: kept_by_output.append(g))
        (out * c).sum().backward()
    same(kept_by_output[0], c.data)
    same(kept_by_leaf[0], c.data)
    same(b.grad, c.data * 2)


def test_prelu_second_order_at_the_kink_is_torchs_where_torchs_is_its_own_derivative():
    # the fuzzer's find: at x = 0 the slope's grad g * x is 0 on both sides; its derivative in
    # x there is the right side's, 0, in torch (it was g in ours)
    x, xt = pair([0.0, -0.0, -1.0, 2.0])
    w, wt = pair([0.3])
    g = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    (gw,) = tg.grad(F.prelu(x, w), [w], tg.Tensor(g), create_graph=True)
    (gwt,) = torch.autograd.grad(torch.nn.functional.prelu(xt, wt), [wt], g, create_graph=True)
    same(gw, gwt)
    same(tg.grad(gw.sum(), [x])[0], torch.autograd.grad(gwt.sum(), [xt])[0])


def test_unbinds_backward_copies_grads_it_did_not_make_as_torchs_does():
    # (it joins by a view only the slices a kernel wrote into a buffer of its own: the review
    # found a hook's in-place change reaching the caller's gradient through stack and unbind)
    x = tg.randn(3, 4, requires_grad=True)
    x.register_hook(lambda g: g.mul_(2))
    given = torch.randn(3, 4)
    kept = given.clone()
    tg.stack(x.unbind(0), 0).backward(given)
    same(given, kept)
    same(x.grad, kept * 2)
    (g,) = tg.grad(tg.stack(x.unbind(1), 1), [x], given)
    assert not shares_memory(g, tg.Tensor(given))


def test_backward_with_inputs_fills_only_those():
    x, xt = pair([1.0, 2.0])
    w, wt = pair([3.0, 4.0])
    h, ht = x * w, xt * wt
    h.retain_grad()
    (h * h).sum().backward(inputs=[w])
    (ht * ht).sum().backward(inputs=[wt])
    assert x.grad is None and xt.grad is None
    same(w.grad, wt.grad)
