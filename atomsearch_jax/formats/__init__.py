"""Agent formats: prompt templates and tag grammars of ReSearch, Search-R1, Atom-Searcher and hermes-style
tool calling (code interpreter, optionally search: the DemyAgent recipe).

A leaf package (imports nothing else from atomsearch_jax). `get_format(name)` returns a default instance;
construct the classes directly for other prompt versions or options.
"""
from atomsearch_jax.formats.atom_searcher import AtomSearcherFormat
from atomsearch_jax.formats.base import (
    CODE_TOOL,
    SEARCH_TOOL,
    AgentFormat,
    AtomicThought,
    FormatReport,
    ToolCall,
    neutralize,
)
from atomsearch_jax.formats.hermes import HermesFormat
from atomsearch_jax.formats.research import ReSearchFormat
from atomsearch_jax.formats.search_r1 import SearchR1Format

FORMATS: dict[str, type[AgentFormat]] = {
    ReSearchFormat.name: ReSearchFormat,
    SearchR1Format.name: SearchR1Format,
    AtomSearcherFormat.name: AtomSearcherFormat,
    HermesFormat.name: HermesFormat,
}


def get_format(name: str, **options) -> AgentFormat:
    """The format registered under `name` ("research", "search_r1", "atom_searcher", "hermes"), with options."""
    if name not in FORMATS:
        raise ValueError(f"unknown agent format {name!r}; known: {sorted(FORMATS)}")
    return FORMATS[name](**options)


__all__ = [
    "CODE_TOOL",
    "SEARCH_TOOL",
    "AgentFormat",
    "AtomSearcherFormat",
    "AtomicThought",
    "FORMATS",
    "FormatReport",
    "HermesFormat",
    "ReSearchFormat",
    "SearchR1Format",
    "ToolCall",
    "get_format",
    "neutralize",
]
