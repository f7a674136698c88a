"""Pure functions: named arrays or tensors in, targets or scalar losses out.

The first line of every docstring is the equation the function computes.
"""
