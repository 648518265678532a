"""One GRPO update (forward + backward + AdamW) of a Qwen2.5-0.5B-shaped model, float32: ours vs PyTorch.

    python scripts/bench_train_step.py [--layers 24 --batch 8 --seq 512 --repeats 5 --remat --scan_layers]

Ours: random weights and a random rollout batch (prompt 128 tokens, the rest generated, groups of 4)
through `GRPOTrainer.update` on one CPU device. Peer: the same Qwen2 shape in transformers
(`Qwen2ForCausalLM`, attn_implementation="sdpa", float32, same initial weights), one step of the same
objective: token log-probs of the generated tokens computed in chunks of --logprob_chunk positions (each
chunk's logits recomputed in the backward pass, as ours), the clipped GRPO token-mean loss with group
advantages, global-norm clipping at 1.0, torch.optim.AdamW with our optimizer's lr/betas/eps/weight decay;
--remat turns on HF gradient checkpointing per decoder layer (ours: per-layer remat). Both stay resident
in this process (params, gradients and AdamW moments twice: ~16 GB at 24 layers).
Timing: bench_util.alternate (warm-up update on both sides, then --repeats rounds alternating).
MFU (bench_util.mfu) = model FLOPs of the update / median time / the probed matmul rate; model FLOPs
= 3 x a forward over every token (the backward is twice the forward); remat recomputation not counted.
Last line: RESULT train_step tokens_s=… mfu=… peak_rss_gb=… torch_tokens_s=… ratio=…
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import alternate, dense_products, forward_flops, load_average, mfu, peak_rss_gb, print_table, probe_machine, speedup  # noqa: E402,E501

from atomsearch_jax import rl  # noqa: E402
from atomsearch_jax.model import get_preset, init_params, save_hf_checkpoint  # noqa: E402
from atomsearch_jax.parallel import make_mesh  # noqa: E402

_BATCH = flags.DEFINE_integer("batch", 8, "Rollout rows per update.")
_SEQ = flags.DEFINE_integer("seq", 512, "Tokens per row.")
_PROMPT = flags.DEFINE_integer("prompt_len", 128, "Prompt tokens per row (loss mask 0).")
_LAYERS = flags.DEFINE_integer("layers", 24, "Decoder layers (24 = Qwen2.5-0.5B).")
# Defaults fit our update in ~11 GB (params + AdamW alone are 6 GB): the layers under one lax.scan with
# each recomputed in the backward pass, so only one layer's activations are alive at a time (unrolled,
# XLA schedules the recomputations early and keeps them all), and no gradient accumulator.
_MICRO = flags.DEFINE_integer("micro_batch_size", 0, "Rows per accumulated micro-batch (0 = all).")
_CHUNK = flags.DEFINE_integer("logprob_chunk", 32, "Positions per [rows, chunk, V] logits block (both sides).")
_REMAT = flags.DEFINE_bool("remat", True, "Recompute each layer in the backward pass (both sides).")
_SCAN = flags.DEFINE_bool("scan_layers", True, "Ours: run the layers under one lax.scan (stacked weights).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed alternated rounds (after one warm-up update per side).")
_TORCH = flags.DEFINE_bool("torch_peer", True, "Run the PyTorch peer.")
_MATMUL = flags.DEFINE_string("matmul", "auto", "Our dense products: auto | xla | blas (ModelConfig.matmul).")


def rollout_batch(vocab: int, b: int, t: int, prompt: int) -> dict:
    rng = np.random.default_rng(0)
    loss_mask = np.zeros((b, t), np.int32)
    loss_mask[:, prompt:] = 1
    return {"tokens": rng.integers(0, vocab, (b, t)), "loss_mask": loss_mask, "lengths": np.full(b, t),
            "rewards": rng.random(b)}


def group_advantages(rewards: np.ndarray, group: int) -> np.ndarray:
    """GRPO advantages: rewards standardised (unbiased std, as ours) within each group of `group` rows."""
    r = rewards.reshape(-1, group)
    return ((r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-6)).reshape(-1)


class TorchGRPOStep:
    """The PyTorch peer: one GRPO update of an HF Qwen2 (see module docstring)."""

    def __init__(self, hf_dir: str, batch: dict, optimizer_cfg, group: int, chunk: int, remat: bool,
                 eps_low: float, eps_high: float):
        import torch
        from transformers import Qwen2ForCausalLM

        self.torch = torch
        self.model = Qwen2ForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="sdpa")
        self.model.train()
        if remat:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": optimizer_cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=optimizer_cfg.learning_rate, betas=(optimizer_cfg.b1, optimizer_cfg.b2),
                                     eps=optimizer_cfg.eps, foreach=True)
        self.max_grad_norm = optimizer_cfg.max_grad_norm
        self.tokens = torch.as_tensor(batch["tokens"], dtype=torch.long)
        self.targets = torch.cat([self.tokens[:, 1:], torch.zeros_like(self.tokens[:, :1])], 1)
        self.mask = torch.as_tensor(batch["loss_mask"], dtype=torch.float32)
        self.adv = torch.as_tensor(group_advantages(batch["rewards"], group), dtype=torch.float32)
        self.chunk, self.remat = chunk, remat
        self.eps_low, self.eps_high = eps_low, eps_high
        self.attn = self.model.config._attn_implementation
        self.grad_norms: list[float] = []

    def _chunk_logprobs(self, hidden, targets):
        logits = self.model.lm_head(hidden).float()
        lse = self.torch.logsumexp(logits, -1)
        logp = self.torch.gather(logits, -1, targets[..., None])[..., 0] - lse
        with self.torch.no_grad():
            entropy = lse - (self.torch.softmax(logits, -1) * logits).sum(-1)
        return logp, entropy

    def __call__(self) -> float:
        torch = self.torch
        from torch.utils.checkpoint import checkpoint
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        hidden = self.model.model(input_ids=self.tokens, use_cache=False).last_hidden_state
        pieces = []
        for s in range(0, hidden.shape[1], self.chunk):
            args = (hidden[:, s:s + self.chunk], self.targets[:, s:s + self.chunk])
            pieces.append(checkpoint(self._chunk_logprobs, *args, use_reentrant=False)[0])
        logp = torch.cat(pieces, 1)
        logp = torch.nn.functional.pad(logp[:, :-1], (1, 0))  # position t-1 predicts token t
        ratio = torch.exp(logp - logp.detach())
        adv = self.adv[:, None]
        surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - self.eps_low, 1 + self.eps_high) * adv)
        loss = -(surrogate * self.mask).sum() / self.mask.sum()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm or float("inf"))
        self.grad_norms.append(float(norm))
        self.opt.step()
        assert torch.isfinite(loss), loss
        return time.perf_counter() - start


def main(argv) -> None:
    del argv
    import torch
    torch.set_num_threads(os.cpu_count())
    probe = probe_machine()
    print(probe.line(), flush=True)
    cfg = get_preset("qwen2.5-0.5b", num_layers=_LAYERS.value, scan_layers=_SCAN.value, matmul=_MATMUL.value)
    print(dense_products(cfg), flush=True)
    b, t = _BATCH.value, _SEQ.value
    c = rl.get_config()
    c.group_size = 4
    c.optimizer.learning_rate = 1e-6
    c.train_step.update(mini_batch_size=0, micro_batch_size=_MICRO.value, logprob_chunk=_CHUNK.value,
                        remat=_REMAT.value)
    params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.PRNGKey(0))
    batch = rollout_batch(cfg.vocab_size, b, t, _PROMPT.value)
    sides = {}
    peer = None
    if _TORCH.value:
        with tempfile.TemporaryDirectory() as tmp:
            save_hf_checkpoint(cfg, params, tmp)  # unstacks scanned layers
            peer = TorchGRPOStep(tmp, batch, c.optimizer, c.group_size, _CHUNK.value, _REMAT.value,
                                 c.loss.eps_low, c.loss.eps_high)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    trainer = rl.GRPOTrainer(cfg, params, c, mesh=mesh)
    del params

    grad_norms = []

    def ours() -> float:
        start = time.perf_counter()
        metrics = trainer.update(batch)
        elapsed = time.perf_counter() - start
        assert np.isfinite(metrics["loss"]) and metrics["skipped_steps"] == 0, metrics
        grad_norms.append(float(metrics["grad_norm"]))
        return elapsed

    start = time.perf_counter()
    ours()
    compile_s = time.perf_counter() - start
    sides["ours"] = ours
    if peer is not None:
        sides["torch"] = peer
    timings = alternate(sides, repeats=_REPEATS.value)
    tokens = b * t
    flops = 3 * forward_flops(cfg, b, t, full_logits=True)
    ours_t = timings["ours"]["s"]
    ours_mfu = mfu(flops, ours_t.median, probe)
    rows = [["model", f"Qwen2.5-0.5B shape, {cfg.num_layers} layers, f32, {cfg.num_params() / 1e6:.0f}M params"],
            ["batch x length", f"{b} x {t}, loss on the last {t - _PROMPT.value} (micro-batch {_MICRO.value or b}, "
                               f"remat {_REMAT.value}, scan {_SCAN.value}, logits chunk {_CHUNK.value})"],
            ["our first update incl. compile (s)", compile_s],
            [f"ours tokens/s, median (min-max) of {_REPEATS.value}", ours_t.spread(tokens, "tok/s")],
            ["ours MFU", ours_mfu]]
    torch_tps, ratio = 0.0, 0.0
    if peer is not None:
        torch_t = timings["torch"]["s"]
        torch_tps, ratio = tokens / torch_t.median, speedup(ours_t, torch_t)
        # Same initial weights and batch: the first updates' gradient norms agree when both sides optimise
        # the same objective.
        rows += [["gradient norm of the first update (ours / PyTorch)", f"{grad_norms[0]:.6g} / {peer.grad_norms[0]:.6g}"]]
        if not np.isclose(grad_norms[0], peer.grad_norms[0], rtol=1e-2):
            raise SystemExit(f"first-update gradient norms differ: ours {grad_norms[0]} vs PyTorch {peer.grad_norms[0]}")
        rows += [[f"PyTorch tokens/s ({torch.__version__}, {torch.get_num_threads()} threads, {peer.attn})",
                  torch_t.spread(tokens, "tok/s")],
                 ["PyTorch MFU", mfu(flops, torch_t.median, probe)], ["ratio of medians (ours / PyTorch)", ratio]]
    rss = peak_rss_gb()
    rows += [["model TFLOP per update", flops / 1e12], ["peak RSS (GB, both sides)", rss]]
    print_table(["what", "value"], rows)
    print(f"load average at the end {load_average()}")
    print(f"RESULT train_step tokens_s={tokens / ours_t.median:.1f} mfu={ours_mfu:.3f} peak_rss_gb={rss:.2f} "
          f"torch_tokens_s={torch_tps:.1f} ratio={ratio:.3f}")


if __name__ == "__main__":
    app.run(main)
