"""Compiled FFI handlers for XLA:CPU (built on first use; see build.py)."""
