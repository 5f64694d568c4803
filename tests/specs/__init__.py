"""One hypothesis spec (or several) per registered op, one module per op family, as in
tinygraph/ops/. Each module defines SPECS: {op name: [Spec, ...]}; a new op needs an
entry, or the meta-test fails. The harness that runs them is `tinygraph.testing`."""

from . import cumulative, einsum, elementwise, linalg, nn, norm, reduce, select, shape, write

SPECS: dict = {}
for _module in (elementwise, linalg, nn, reduce, shape, write, cumulative, einsum, norm, select):
    for _name, _specs in _module.SPECS.items():
        SPECS.setdefault(_name, []).extend(_specs)
