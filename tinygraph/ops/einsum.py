"""`einsum`: sums of products named by subscripts, `einsum("bij,bjk->bik", a, b)`.

Its backward is einsums too. The grad of operand k is the output grad contracted with
every other operand, to k's subscripts: d(out)/d(a_k) sums, over everything k shares
with the rest, the product of the rest. Two cases need one more operand each, so that
the grad can be written as an einsum at all:
- a subscript only k has (summed away, as j in "ij->i"): its grad is the same along that
  dim, a product with ones;
- a subscript k repeats (a diagonal, as in "ii->i"): only the diagonal gets a grad, a
  product with an identity that ties the second occurrence to the first.

A deliberate difference: torch returns a view of the operand where the equation only
reorders it ("ij->ji"), so that writing into the result writes into the operand (and is
refused for a leaf that requires grad); tinygraph always returns a new tensor.
"""

from __future__ import annotations

import string
from collections import Counter

import torch

from ..function import Function, register

LETTERS = string.ascii_uppercase + string.ascii_lowercase  # torch's order of subscripts


@register("tinygraph.einsum")
class Einsum(Function):
    autocast = "low"

    @staticmethod
    def call(*args):
        """`einsum(equation, *operands)` (operands also as one list), or torch's sublist
        form `einsum(op1, [0, 1], op2, [1, 2], [0, 2])`."""
        if args and not isinstance(args[0], str):
            return Einsum.apply(*_from_sublists(args))
        if len(args) == 2 and isinstance(args[1], (list, tuple)):
            return Einsum.apply(args[0], *args[1])
        return Einsum.apply(*args)

    @staticmethod
    def forward(ctx, equation, *operands):
        out = torch.einsum(equation, *operands)  # torch checks the equation
        if any(out.untyped_storage().data_ptr() == op.untyped_storage().data_ptr() for op in operands):
            out = out.clone()  # torch may return a view of the operand ("ij->ji"): ours is a new tensor
        ctx.subscripts, ctx.output, ctx.spare = _spelled_out(equation, [op.shape for op in operands])
        ctx.save_for_backward(*operands)
        return out

    @staticmethod
    def backward(ctx, g):
        operands = ctx.saved_tensors
        wanted = ctx.needs_input_grad[1:]
        return (None, *(_operand_grad(ctx, g, operands, k) if wanted[k] else None for k in range(len(operands))))


def _operand_grad(ctx, g, operands, k):
    """The einsum of g with every operand but k, to k's subscripts (see the module docstring)."""
    mine = ctx.subscripts[k]
    others = [i for i in range(len(operands)) if i != k]
    present = set(ctx.output).union(*(ctx.subscripts[i] for i in others))
    terms, tensors, result = ["".join(ctx.output)], [g], []
    terms += ["".join(ctx.subscripts[i]) for i in others]
    tensors += [operands[i] for i in others]
    spare, seen = iter(ctx.spare), set()
    for letter, size in zip(mine, operands[k].shape):
        if letter in seen:  # a repeat: a fresh subscript tied to the first by an identity
            fresh = next(spare)
            terms.append(letter + fresh)
            tensors.append(g.new_ones(size).diag())
            result.append(fresh)
            continue
        seen.add(letter)
        result.append(letter)
        if letter not in present:  # summed away, and only here: the grad is the same all along it
            terms.append(letter)
            tensors.append(g.new_ones(size))
    return Einsum.apply(",".join(terms) + "->" + "".join(result), *tensors)


def _spelled_out(equation: str, shapes: list) -> tuple[list[list[str]], list[str], list[str]]:
    """Each operand's subscripts and the output's, as lists of letters, '...' written out in
    letters of its own (aligned at the right, as its dims broadcast) and the implicit output
    made explicit; and the letters left unused."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    spare = [c for c in LETTERS if c not in equation]
    ellipsis_dims = max((len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes) if "..." in t), default=0)
    broadcast, spare = spare[:ellipsis_dims], spare[ellipsis_dims:]

    def spell(term: str, ndim: int) -> list[str]:
        if "..." not in term:
            return list(term)
        before, after = term.split("...")
        n = ndim - len(before) - len(after)
        return [*before, *broadcast[ellipsis_dims - n :], *after]

    subscripts = [spell(t, len(s)) for t, s in zip(terms, shapes)]
    if arrow:
        out = spell(output, len(broadcast) + len(output.replace("...", "")))
    else:  # implicit: the broadcast dims, then the letters used once, in order
        counts = Counter(c for t in terms for c in t.replace("...", ""))
        out = broadcast + sorted((c for c, n in counts.items() if n == 1), key=LETTERS.index)
    return subscripts, out, spare


def _from_sublists(args: tuple) -> tuple:
    """torch's sublist form, as an equation and the operands."""
    pairs, output = (args, None) if len(args) % 2 == 0 else (args[:-1], args[-1])

    def term(sublist) -> str:
        return "".join("..." if s is Ellipsis else LETTERS[s] for s in sublist)

    operands = pairs[0::2]
    equation = ",".join(term(s) for s in pairs[1::2]) + ("" if output is None else "->" + term(output))
    return (equation, *operands)
