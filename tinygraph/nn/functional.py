"""`tinygraph.nn.functional`: torch.nn.functional's names and arguments, on tinygraph Tensors.

The functions here are installed by the ops that provide them (`@register("F.gelu")` or
`@public("F.mse_loss")` in `tinygraph/ops/`), next to their forward and backward;
`tinygraph.PUBLIC` lists every public name and what it calls.
"""
