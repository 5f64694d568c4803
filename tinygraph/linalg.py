"""`tinygraph.linalg`: torch.linalg's names, on tinygraph Tensors (installed by the ops that
provide them, as `@public("linalg.vector_norm")`)."""
