"""Character-level language models built from tinygraph ops, and the command line that trains them."""
