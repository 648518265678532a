"""Clients of external OpenAI-compatible servers (judges, teachers)."""
from atomsearch_jax.clients.openai_compat import EndpointConfig, OpenAIClient, Reply

__all__ = ["EndpointConfig", "OpenAIClient", "Reply"]
