"""Specs of einsum (tinygraph/ops/einsum.py): equations drawn with shared, summed-away and
repeated subscripts, broadcast '...' dims, implicit and explicit outputs."""

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Diff, Spec, values


@st.composite
def einsum_inputs(draw):
    sizes = {c: draw(st.integers(1, 3)) for c in "abcd"}
    n = draw(st.integers(1, 3))
    terms = ["".join(draw(st.lists(st.sampled_from("abcd"), max_size=3))) for _ in range(n)]
    ellipsis = draw(st.booleans())
    if ellipsis:
        broadcast = draw(hnp.mutually_broadcastable_shapes(num_shapes=n, max_dims=2, max_side=2)).input_shapes
    shapes = [(*(broadcast[i] if ellipsis else ()), *(sizes[c] for c in term)) for i, term in enumerate(terms)]
    if ellipsis:
        terms = ["..." + t for t in terms]
    equation = ",".join(terms)
    if draw(st.booleans()):  # an explicit output: some of the letters used, in any order
        used = sorted({c for t in terms for c in t if c != "."})
        out = draw(st.permutations(used))[: draw(st.integers(0, len(used)))]
        equation += "->" + ("..." if ellipsis else "") + "".join(out)
    return (equation, *(Diff(draw(values(s))) for s in shapes)), {}


def _sublists(lib, F, equation, *operands):
    """torch's sublist form of the same equation (letters a-d as 26-29)."""
    inputs, _, output = equation.replace("...", "").partition("->")
    args = []
    for term, op in zip(inputs.split(","), operands):
        args += [op, [Ellipsis] * ("..." in equation) + [ord(c) - ord("a") + 26 for c in term]]
    if "->" in equation:
        args.append([Ellipsis] * ("..." in equation) + [ord(c) - ord("a") + 26 for c in output])
    return lib.einsum(*args)


SPECS = {
    "Einsum": [
        Spec(einsum_inputs(), lambda lib, F, equation, *operands: lib.einsum(equation, *operands)),
        Spec(einsum_inputs(), lambda lib, F, equation, *operands: lib.einsum(equation, list(operands))),
        Spec(einsum_inputs(), _sublists),
    ],
}
