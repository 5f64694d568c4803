"""The random-program fuzzer: whole programs drawn from the op registry, run on tinygraph and
on torch side by side, every value and every grad compared.

Per-op specs draw inputs for one op at a time; the bugs this hunts live between ops. A
program starts from a few leaves (some require grad, some are constants), then takes 5 to
30 steps, each one of:

- an op: a spec of a registered op (tests/specs/), its drawn inputs partly replaced by
  values the program already made (reused by several consumers; reshaped by a gather when
  the shape differs), its outputs added to the program;
- detach: a value cut from its graph;
- an in-place write into a value (`add_`, `mul_`, `x[i] = v`, `masked_fill_`, `copy_`,
  `zero_`...), often a view or a value that some op saved;

then one or more backward passes from several roots (some computed from others):
`backward()` or `grad()`, with or without retain_graph, with or without create_graph (then a
second-order pass). Wherever torch raises (a leaf written in place, a saved value changed),
tinygraph must raise too, and the other way round. After every backward, MyGrad's
invariants: no input and no given grad changed, no `.grad` shares memory with another or
with a given grad, the graph freed unless retained.

The `ci` profile runs a fixed set of programs; `HYPOTHESIS_PROFILE=thorough` searches for long
(`FUZZ_SHRINK=0` reports the first failure as found, without minimizing it: much faster).
"""

import math
import os
from functools import partial

import torch
import torch.nn.functional as torch_F
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from specs import SPECS

import tinygraph as tg
import tinygraph.nn.functional as tg_F
from tinygraph.inplace import bring_up_to_date
from tinygraph.testing import Diff, check_invariants, materialize, outputs

EXAMPLES = {"ci": 150, "thorough": 1500}.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), 150)
OP_SPECS = [(name, spec) for name, specs in sorted(SPECS.items()) for spec in specs]
SECOND_ORDER_SPECS = [(name, spec) for name, spec in OP_SPECS if spec.second_order and spec.finite_differences]
LEAF_SHAPES = [(3,), (2, 3), (2, 1), (1, 3), (), (2, 2, 3)]


class Mismatch(AssertionError):
    pass


def sibling_output(t):
    """An output of the fused LSTM cell or sequence: its h and c are siblings (one node), where
    torch's reference computes h from c, so grad(h, c) differs (None here): not a grad() input."""
    return t.grad_fn is not None and t.grad_fn.name in ("LSTMCell", "LSTMSequence")


# Deliberate differences, documented where they are made: tinygraph raises, torch does not.
# Fused ops keep what their one-pass backward reads: Gelu, attention, normalize and the LSTM
# sequence their output, cross-entropy its logits, kl_div with log_target its input (see their
# docstrings); changing that in place before backward is an error, where torch's, which keep
# other tensors, may allow it.
DELIBERATE = [
    f"saved by {op} for backward was modified in place"
    for op in ("Gelu", "ScaledDotProductAttention", "CrossEntropy", "LSTMSequence", "Normalize", "KLDiv")
]


# torch's own failures, where it has no answer to compare with: a derivative it lacks, and
# a double backward that breaks inside (remainder's, with an undefined grad of its divisor)
TORCH_FAILS = ("is not implemented", "Expected a proper Tensor but got None")
# ... and, in backward only, the backward of a write it allowed into memory that several
# elements share (an expanded view): its own backward then refuses to write there
TORCH_BACKWARD_FAILS = (*TORCH_FAILS, "more than one element of the written-to tensor refers to a single memory")

# ops whose torch double backward divides by an element, and so overflows where one is tiny (prod:
# 5.6e219 for an exact -2.4 at an element of 2e-240, inf - inf = nan at a denormal one; cumprod:
# 8.2e98 and 0 where finite differences give -0.61 and 0.67); ours is exact (tests/test_semantics.py):
# there torch is no oracle, as the prod specs' own `not_tiny` says. Their inputs, reused or drawn
# by their specs, hold no tiny elements.
NOT_TINY = {"Prod", "Cumprod"}
# At x = 0, prelu's kink, torch's first-order grad of x takes the negative side (g * slope) and
# its second-order grads the positive side (derivatives.yaml masks with x >= 0), so no formula
# matches both: ours are the derivatives of our first-order grads (the grad of the slope's grad,
# g * x masked where x >= 0, is 0 there on both sides). In a second-order program its inputs,
# reused or drawn by its specs, hold no exact zeros (tests/test_semantics.py checks that case).
AT_KINK = {"Prelu"}


def _has_tiny(t):
    return bool(((t != 0) & (t.abs() < 1e-100)).any())


def run_both(tg_fn, torch_fn, torch_fails=TORCH_FAILS):
    """Run the same step on both libraries: both succeed (results returned), or both raise."""
    errors, results = [], []
    for fn in (tg_fn, torch_fn):
        try:
            results.append(fn())
            errors.append(None)
        except (RuntimeError, ValueError, IndexError, TypeError) as err:
            results.append(None)
            errors.append(err)
    if errors[0] is not None and errors[1] is None and any(d in str(errors[0]) for d in DELIBERATE):
        return None
    if errors[1] is not None and errors[0] is None and any(m in str(errors[1]) for m in torch_fails):
        return None  # a derivative torch lacks (hardsigmoid's second one...): nothing to compare with
    if errors[1] is not None and errors[0] is None and "modified by an inplace operation" in str(errors[1]):
        # torch keeps some tensors its formula names but does not read (gather's input, for its
        # shape; div's operands under a rounding mode) and refuses a backward after they changed;
        # tinygraph keeps what its backward reads, every one version-checked (the invariants
        # assert that no node keeps a tensor outside save_for_backward), so it computes right
        return None
    if (errors[0] is None) != (errors[1] is None) and "a second time" in str(errors[0] or errors[1]):
        # which nodes keep tensors differs op by op (each library keeps what its own formula
        # names), so whether a second backward without retain_graph is refused differs too;
        # the invariants check that every node frees what it kept
        return None
    if (errors[0] is None) != (errors[1] is None):
        raise Mismatch(f"tinygraph {'raised ' + repr(errors[0]) if errors[0] else 'ran'}, torch "
                       f"{'raised ' + repr(errors[1]) if errors[1] else 'ran'}")  # fmt: skip
    return None if errors[0] is not None else results


def close(ours, theirs, what):
    ours = ours.data if isinstance(ours, tg.Tensor) else ours
    theirs = theirs.detach()
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        raise Mismatch(f"{what}: {tuple(ours.shape)} {ours.dtype} vs torch's {tuple(theirs.shape)} {theirs.dtype}")
    if theirs.is_floating_point():
        # where torch's own value is beyond 1e100 it is rounding, not a derivative (1/x**2 of an
        # x of 1e-240, say: torch gave -7e193 where the exact second derivative is 0): no oracle
        beyond = theirs.isfinite() & (theirs.abs() > 1e100)
        ours, theirs = ours.masked_fill(beyond, 0), theirs.masked_fill(beyond, 0)
    # float64 tightly; a lower precision at torch.testing's own tolerances for it: there two
    # orders of the same operations differ by an ulp of the operands (float32: 2e-7 where a
    # sum cancels to 5e-7)
    tolerances = {"rtol": 1e-6, "atol": 1e-8} if theirs.dtype == torch.float64 else {}
    torch.testing.assert_close(ours, theirs, **tolerances, equal_nan=True, msg=lambda m: f"{what}: {m}")


class Log:
    """The program's steps, as text, shown with a failing example."""

    def append(self, line: str) -> None:
        note(line)


class Program:
    """The values of one program, each as (tinygraph tensor, torch tensor)."""

    def __init__(self, data):
        self.data = data
        self.values: list[tuple] = []  # every floating tensor made so far
        self.leaves: list[tuple] = []  # the ones that require grad and no op made
        self.log = Log()
        self.second_order = False  # whether its backward will build a graph (create_graph)

    def add(self, ours, theirs, what):
        if ours.requires_grad != theirs.requires_grad:
            raise Mismatch(f"{what}: requires_grad {ours.requires_grad}, torch's {theirs.requires_grad}")
        close(ours, theirs, what)
        self.values.append((ours, theirs))
        self.log.append(f"  makes value {len(self.values) - 1} {tuple(ours.shape)}, requires_grad={ours.requires_grad}")

    def new_leaf(self, shape, requires_grad):
        value = torch.randn(shape, dtype=torch.float64, generator=self.gen())
        pair = (tg.Tensor(value.clone(), requires_grad=requires_grad), value.clone().requires_grad_(requires_grad))
        self.values.append(pair)
        if requires_grad:
            self.leaves.append(pair)
        self.log.append(f"leaf: value {len(self.values) - 1} {tuple(shape)} requires_grad={requires_grad}")
        return pair

    def gen(self):
        return torch.Generator().manual_seed(self.data.draw(st.integers(0, 2**31), label="seed"))

    def pick(self, shape=None, op=None):
        """A value already made: of `shape` if there is one, else any, gathered into `shape`.
        Values holding NaN or Inf are not reused: where they lead, different but equally right
        formulas (a fused op and its composite) may disagree on which grads are NaN. Nor are
        values with the tiniest elements for an op of NOT_TINY."""
        finite = [k for k, v in enumerate(self.values) if bool(torch.isfinite(v[1].detach()).all())]
        if op in NOT_TINY:
            finite = [k for k in finite if not _has_tiny(self.values[k][1].detach())]
        if op in AT_KINK and self.second_order:
            finite = [k for k in finite if bool(self.values[k][1].detach().ne(0).all())]
        if not finite:
            return self.new_leaf(shape if shape is not None else (), True)
        same = [k for k in finite if shape is not None and tuple(self.values[k][0].shape) == tuple(shape)]
        pool = same if same and self.data.draw(st.booleans(), label="same shape") else finite
        k = pool[self.data.draw(st.integers(0, len(pool) - 1), label="pick")]
        ours, theirs = self.values[k]
        self.log.append(f"  uses value {k} {tuple(ours.shape)}")
        if shape is None or tuple(ours.shape) == tuple(shape):
            return ours, theirs
        return self.gathered(ours, theirs, shape)

    def gathered(self, ours, theirs, shape):
        n, have = math.prod(shape), ours.numel()
        if not have:
            return self.new_leaf(shape, True)
        index = torch.arange(n) % have  # elements repeat when the value is smaller: grads must add up
        made = run_both(
            lambda: ours.reshape(-1)[tg.Tensor(index)].reshape(shape), lambda: theirs.reshape(-1)[index].reshape(shape)
        )
        return made if made is not None else self.new_leaf(shape, True)


def materialize_reusing(program, value, lib, reused):
    """A spec's drawn argument, with each Diff replaced by a reused program value (or a new leaf)."""
    if isinstance(value, Diff):
        return reused[id(value)][0 if lib is tg else 1]
    if isinstance(value, tuple):
        return tuple(materialize_reusing(program, v, lib, reused) for v in value)
    return materialize(value, lib, "cpu")


def diffs_in(value):
    if isinstance(value, Diff):
        return [value]
    if isinstance(value, tuple):
        return [d for v in value for d in diffs_in(v)]
    return []


def op_step(program, specs):
    name, spec = specs[program.data.draw(st.integers(0, len(specs) - 1), label="op")]
    program.log.append(f"{name} (spec {SPECS[name].index(spec)}):")
    args, kwargs = program.data.draw(spec.inputs, label=f"{name} inputs")
    if name in NOT_TINY and any(_has_tiny(torch.as_tensor(d.value)) for d in diffs_in(args)):
        return  # (see NOT_TINY)
    if name in AT_KINK and program.second_order and any((torch.as_tensor(d.value) == 0).any() for d in diffs_in(args)):
        return  # (see AT_KINK)
    reused = {}
    for d in diffs_in(args):
        shape = tuple(d.value.shape)
        if program.values and program.data.draw(st.integers(0, 3), label="reuse") > 0:
            reused[id(d)] = program.pick(shape, name)
        else:
            reused[id(d)] = program.new_leaf(shape, True)
            program.values[-1][0].data.copy_(torch.as_tensor(d.value))  # the spec's own values
            program.values[-1][1].data.copy_(torch.as_tensor(d.value))
    ours_args = materialize_reusing(program, args, tg, reused)
    theirs_args = materialize_reusing(program, args, torch, reused)
    ours_kw = {k: materialize(v, tg, "cpu") for k, v in kwargs.items()}
    theirs_kw = {k: materialize(v, torch, "cpu") for k, v in kwargs.items()}
    results = run_both(
        lambda: outputs(spec.call(tg, tg_F, *ours_args, **ours_kw)),
        lambda: outputs((spec.torch_call or spec.call)(torch, torch_F, *theirs_args, **theirs_kw)),
    )
    if results is not None:
        if len(results[0]) != len(results[1]):
            raise Mismatch(f"{name}: {len(results[0])} outputs, torch's {len(results[1])}")
        for k, (ours, theirs) in enumerate(zip(*results)):
            if name == "Einsum" and theirs._is_view():
                # a deliberate difference (ops/einsum.py): torch's einsum may return a view of its
                # operand ("ij->ji"), tinygraph's always a new tensor; the program goes on with a copy
                theirs = theirs.clone()
            program.add(ours, theirs, f"{name} output {k}")


IN_PLACE = {
    "add_": lambda x, y: x.add_(y),
    "mul_": lambda x, y: x.mul_(y),
    "sub_": lambda x, y: x.sub_(y, alpha=0.5),
    "+=": lambda x, y: x.__iadd__(y),
    "*=": lambda x, y: x.__imul__(y),
    "copy_": lambda x, y: x.copy_(y),
    "exp_": lambda x, y: x.exp_(),
    "tanh_": lambda x, y: x.tanh_(),
    "clamp_": lambda x, y: x.clamp_(-0.5, 0.5),
    "zero_": lambda x, y: x.zero_(),
    "fill_": lambda x, y: x.fill_(0.25),
}


def in_place_step(program):
    """A write into a value; None when both libraries refused it (or torch refused it by its
    quirk below: the program ends there)."""
    kind = program.data.draw(st.sampled_from([*IN_PLACE, "setitem", "setitem_ids", "masked_fill_"]), label="write")
    program.log.append(f"in place {kind} into (the first value used below):")
    ours, theirs = program.pick()
    try:
        return write(program, kind, ours, theirs)
    except Mismatch as err:
        # torch's quirk: a view whose base (a tensor that needed no grad) was given a grad by
        # a write through the view is refused any further write, as "a leaf Variable that
        # requires grad", though torch itself says it is no leaf (is_leaf False)
        if "a leaf Variable that requires grad is being used" in str(err) and not theirs.is_leaf:
            return None
        raise


def write(program, kind, ours, theirs):
    if kind in IN_PLACE:
        other = program.pick(tuple(ours.shape))
        return run_both(lambda: IN_PLACE[kind](ours, other[0]), lambda: IN_PLACE[kind](theirs, other[1]))
    elif kind == "masked_fill_":
        mask = torch.rand(ours.shape, generator=program.gen()) > 0.5
        return run_both(lambda: ours.masked_fill_(tg.Tensor(mask), 1.5), lambda: theirs.masked_fill_(mask, 1.5))
    elif ours.ndim and ours.shape[0]:  # a region to write into
        n = ours.shape[0]
        if kind == "setitem":
            start = program.data.draw(st.integers(0, n - 1), label="start")
            index = slice(start, program.data.draw(st.integers(start + 1, n), label="stop"))
        else:
            index = torch.tensor(
                program.data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3), label="ids")
            )
        region = tuple(theirs.detach()[index].shape)
        value = program.pick(region)

        def set_ours():
            ours[tg.Tensor(index) if isinstance(index, torch.Tensor) else index] = value[0]

        def set_theirs():
            theirs[index] = value[1]

        return run_both(set_ours, set_theirs)
    return True


def detach_step(program):
    program.log.append("detach:")
    ours, theirs = program.pick()
    program.add(ours.detach(), theirs.detach(), "detach")


def refuses(fn):
    try:
        fn()
    except RuntimeError:
        return True
    return False


def check_all_values(program):
    unusable = set()
    for k, (ours, theirs) in enumerate(program.values):
        # a view sees its base's new history at its next use (inplace.py); both refuse to give
        # one made by split or unbind a history after its base changed in place
        if ours._base is None:
            continue
        refused = run_both(partial(bring_up_to_date, ours), lambda t=theirs: t.grad_fn) is None
        if refused and refuses(lambda t=theirs: t.grad_fn):  # by torch too, not just by us on purpose
            unusable.add(k)
    for k, (ours, theirs) in enumerate(program.values):
        # a view refused by both reports requires_grad as its base now does in torch and
        # as it was made here (a base keeps no list of its views): a deliberate difference
        if ours.requires_grad != theirs.requires_grad and k not in unusable:
            raise Mismatch(f"value {k}: requires_grad {ours.requires_grad}, torch's {theirs.requires_grad}")
        close(ours, theirs, f"value {k}")


def backward_phase(program, create_graph):
    """One backward() or grad() on both sides, compared; False when there was nothing to run
    or both refused it."""
    # as for reuse (Program.pick), no value holding NaN or Inf is a root: the grads through it
    # are inf * 0 somewhere, and which of them come out nan depends on each formula's order
    # (einsum's contraction order, say), not on which is right
    live = [v for v in program.values if v[0].requires_grad and bool(torch.isfinite(v[1].detach()).all())]
    if not live:
        return False
    count = program.data.draw(st.integers(1, min(3, len(live))), label="roots")
    roots = [live[i] for i in program.data.draw(
        st.lists(st.integers(0, len(live) - 1), min_size=count, max_size=count, unique=True), label="which roots")]  # fmt: skip
    gen = program.gen()
    given = [torch.randn(r[1].shape, dtype=torch.float64, generator=gen) for r in roots]
    retain = program.data.draw(st.booleans(), label="retain")
    mode = program.data.draw(st.sampled_from(["backward", "grad"]), label="mode")
    before = [v[0].data.clone() for v in program.values]
    ours_given = [g.clone() for g in given]
    for leaf in program.leaves:
        leaf[0].grad = leaf[1].grad = None
    program.log.append(f"{mode} from {count} roots, retain_graph={retain}, create_graph={create_graph}")

    if mode == "backward" and not create_graph:
        result = run_both(
            lambda: tg.backward([r[0] for r in roots], ours_given, retain_graph=retain),
            lambda: torch.autograd.backward([r[1] for r in roots], given, retain_graph=retain),
            TORCH_BACKWARD_FAILS,
        )
        if result is None:
            return False
        for k, (ours, theirs) in enumerate(program.leaves):
            if theirs.grad is None:
                assert ours.grad is None or not ours.grad.data.any(), f"leaf {k}: a grad where torch has none"
            else:
                assert ours.grad is not None, f"leaf {k}: no grad where torch has one"
                close(ours.grad, theirs.grad, f"grad of leaf {k}")
    else:
        targets = [v for v in program.values if v[0].requires_grad and not sibling_output(v[0])]
        chosen = program.data.draw(st.lists(st.integers(0, len(targets) - 1), min_size=1, max_size=4), label="inputs")
        inputs = [targets[i] for i in chosen]
        result = run_both(
            lambda: tg.grad([r[0] for r in roots], [i[0] for i in inputs], ours_given, retain_graph=retain or None,
                            create_graph=create_graph, allow_unused=True),
            lambda: torch.autograd.grad([r[1] for r in roots], [i[1] for i in inputs], given, retain_graph=retain or None,
                                        create_graph=create_graph, allow_unused=True),
            TORCH_BACKWARD_FAILS,
        )  # fmt: skip
        if result is None:
            return False
        for k, (ours, theirs) in enumerate(zip(*result)):
            if theirs is None:
                assert ours is None or not ours.data.any(), f"input {k}: a grad where torch has none"
            else:
                assert ours is not None, f"input {k}: no grad where torch has one"
                close(ours, theirs, f"grad of input {k}")
        if create_graph:
            second_order(program, result)
    # grad() frees only the nodes it ran (as torch's does): the freed-graph check is backward()'s
    freed = not (retain or create_graph or mode == "grad")
    check_invariants([v[0] for v in program.values], before, ours_given, given, [r[0] for r in roots], not freed)
    return True


def second_order(program, result):
    """Backward through the first-order grads themselves: a random weighted sum of them.
    (A first-order grad that does not depend on any input needs no graph here, where torch
    may still give it one: torch's second derivative is then zero, and so must ours be.)"""
    # as no value holding NaN or Inf is a root (backward_phase), neither is a first-order grad
    # holding one: which second-order grads then come out nan is each formula's order
    pairs = [(o, t) for o, t in zip(*result) if o is not None and t is not None and bool(t.detach().isfinite().all())]
    gen = program.gen()
    weights = [torch.randn(t.shape, dtype=torch.float64, generator=gen) for _, t in pairs]
    for leaf in program.leaves:
        leaf[0].grad = leaf[1].grad = None
    ours = [(o * tg.Tensor(w)).sum() for (o, _), w in zip(pairs, weights) if o.requires_grad]
    theirs = [(t * w).sum() for (_, t), w in zip(pairs, weights) if t.requires_grad]
    if (
        run_both(lambda: ours and sum(ours).backward(), lambda: theirs and sum(theirs).backward(), TORCH_BACKWARD_FAILS)
        is None
    ):
        return  # both refused, or torch lacks the derivative: nothing to compare
    for k, (o, t) in enumerate(program.leaves):
        if t.grad is not None and (o.grad is not None or t.grad.any()):
            assert o.grad is not None, f"leaf {k}: no second-order grad where torch has one"
            close(o.grad, t.grad, f"second-order grad of leaf {k}")
        elif o.grad is not None:  # torch's none is a zero; ours may be a rounding residual of one
            close(o.grad, torch.zeros_like(o.grad.data), f"leaf {k}: a second-order grad where torch has none")


def run_program(data):
    program = Program(data)
    create_graph = program.second_order = data.draw(st.integers(0, 3), label="create_graph") == 0
    specs = SECOND_ORDER_SPECS if create_graph else OP_SPECS
    for _ in range(data.draw(st.integers(1, 4), label="leaves")):
        program.new_leaf(data.draw(st.sampled_from(LEAF_SHAPES), label="shape"), data.draw(st.booleans(), label="rg"))
    for _ in range(data.draw(st.integers(5, 30), label="steps")):
        action = data.draw(st.sampled_from(["op"] * 6 + ["detach", "in place", "in place"]), label="action")
        if action == "op":
            op_step(program, specs)
        elif action == "detach":
            detach_step(program)
        elif not create_graph and in_place_step(program) is None:
            # both refused the write (as they must, together); torch may be left half-changed
            # by its refusal, so this program ends here
            return program
    check_all_values(program)
    # again, on what the first pass retained (or freed); not after a refused pass: how much of
    # its graph torch had run and freed before refusing is its own engine's order
    if backward_phase(program, create_graph) and not create_graph and data.draw(st.booleans(), label="again"):
        backward_phase(program, False)
    return program


PHASES = [p for p in Phase if p is not Phase.shrink or os.environ.get("FUZZ_SHRINK") != "0"]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), phases=PHASES)
@given(data=st.data())
def test_random_programs_match_torch(data):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own warnings (var with no degrees of freedom...)
        run_program(data)
