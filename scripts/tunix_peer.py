"""Tunix's sampler (google-tunix) as a generation peer: the same HF checkpoint, greedy, no EOS.

Importable only where google-tunix is installed (scripts/install_peers.sh); `available()` says whether.
Prompts are token ids (the benchmark's prompts are random ids, so Tunix's string tokenizer is bypassed
with an id-passthrough one); the pad id is the last vocabulary id, which the benchmark's prompts avoid
(Tunix treats every pad-id token as padding).
"""
from __future__ import annotations

import time

import numpy as np


def available() -> bool:
    try:
        import tunix.generate.sampler  # noqa: F401,PLC0415
        import tunix.models.qwen2.params  # noqa: F401,PLC0415
    except ImportError:
        return False
    return True


def version() -> str:
    from importlib.metadata import version as dist_version  # noqa: PLC0415
    return dist_version("google-tunix")


class _IdTokenizer:
    """What Tunix's TokenizerAdapter needs, over space-separated token ids."""

    def __init__(self, pad: int):
        self._pad = pad

    def encode(self, text: str, **kwargs) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids, **kwargs) -> str:
        return " ".join(map(str, ids))

    def bos_id(self):
        return None

    def eos_id(self) -> int:
        return -1

    def pad_id(self) -> int:
        return self._pad


class TunixGreedy:
    """Tunix's Qwen2 (nnx, float32) and `Sampler` over an HF checkpoint directory."""

    def __init__(self, hf_dir: str, cfg, cache_size: int):
        import jax.numpy as jnp  # noqa: PLC0415
        from tunix.generate import sampler as sampler_lib  # noqa: PLC0415
        from tunix.models.qwen2 import model as model_lib  # noqa: PLC0415
        from tunix.models.qwen2 import params as params_lib  # noqa: PLC0415

        config = model_lib.ModelConfig(
            num_layers=cfg.num_layers, vocab_size=cfg.vocab_size, embed_dim=cfg.hidden_size,
            hidden_dim=cfg.intermediate_size, num_heads=cfg.num_heads, head_dim=cfg.dims_per_head,
            num_kv_heads=cfg.num_kv_heads, rope_theta=int(cfg.rope_theta), norm_eps=cfg.rms_norm_eps,
            use_tied_embedding=cfg.tie_word_embeddings)
        model = params_lib.create_model_from_safe_tensors(hf_dir, config, mesh=None, dtype=jnp.float32)
        self.pad = cfg.vocab_size - 1
        self.sampler = sampler_lib.Sampler(
            model, _IdTokenizer(self.pad),
            sampler_lib.CacheConfig(cache_size=cache_size, num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads,
                                    head_dim=cfg.dims_per_head))

    def run(self, prompts: np.ndarray, new_tokens: int) -> tuple[dict[str, float], np.ndarray]:
        """Greedy generation of new_tokens per row, as `Sampler.__call__` does it, with its two phases timed.

        prompts [B, P] int (no pad id). Returns ({"call": s, "decode": s after the first token}, tokens
        [B, new_tokens]). Tunix's decode loop runs new_tokens steps for the new_tokens - 1 tokens after
        the one prefill samples (its last step writes past the buffer), which is its cost to pay.
        """
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        s = self.sampler
        if (prompts == self.pad).any():
            raise ValueError(f"prompts contain the pad id {self.pad}")
        start = time.perf_counter()
        s.eos_ids = jnp.array([-1])
        state = s.init_sample_state(jnp.asarray(prompts, jnp.int32), include_logits=False,
                                    total_sampling_steps=prompts.shape[1] + new_tokens, forbidden_token_ids=None,
                                    temperature=0.0, top_p=None, top_k=None, seed=jax.random.PRNGKey(0),
                                    beam_size=None)
        state = s._compiled_prefill_fn(s._flattened_transformer_state, state, None, echo=False)
        jax.block_until_ready(state.token_buffer)
        first = time.perf_counter()
        state = s._compiled_decode_fn(s._flattened_transformer_state, state)
        tokens = np.asarray(jax.device_get(state.token_buffer))[:, prompts.shape[1]:]
        end = time.perf_counter()
        return {"call": end - start, "decode": end - first}, tokens
