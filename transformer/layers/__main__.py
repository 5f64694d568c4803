"""python -m transformer.layers: the table of built-in layers (README's, kept in step by a test)."""

from .registry import markdown_table

print(markdown_table())
