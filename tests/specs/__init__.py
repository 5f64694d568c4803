"""One hypothesis spec (or several) per registered op, one module per op family, as in
tinygraph/ops/. Each module defines SPECS: {op name: [Spec, ...]}; a new op needs an
entry, or the meta-test fails. The harness that runs them is `tinygraph.testing`."""

from . import (
    activation,
    conv,
    cumulative,
    einsum,
    elementwise,
    linalg,
    loss,
    math,
    nn,
    norm,
    pool,
    reduce,
    resample,
    select,
    shape,
    write,
)

SPECS: dict = {}
# the newer families last, so that older spec ids keep their numbers
_FAMILIES = (elementwise, linalg, nn, reduce, shape, write, math, activation, loss, conv, pool, resample)
for _module in (*_FAMILIES, cumulative, einsum, norm, select):
    for _name, _specs in _module.SPECS.items():
        SPECS.setdefault(_name, []).extend(_specs)
