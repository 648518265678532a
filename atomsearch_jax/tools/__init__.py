"""Tools an agent can call besides search: the sandboxed code interpreter."""
from atomsearch_jax.tools.code_interpreter import (
    CodeInterpreter,
    ExecutionResult,
    Limits,
    SandboxUnavailable,
    execute,
)
from atomsearch_jax.tools.isolation import Isolation, probe

__all__ = ["CodeInterpreter", "ExecutionResult", "Isolation", "Limits", "SandboxUnavailable", "execute", "probe"]
