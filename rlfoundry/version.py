"""rlfoundry's version, in a module of its own: run records (run/record.py) name it without
importing the public API above them."""

__version__ = "0.1.0"
