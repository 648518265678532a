"""Chat server throughput: concurrent judge-style requests against `atomsearch_jax.serve`'s service.

A random Qwen2-shaped model (--hidden, --layers; vocabulary of the synthetic world's tokenizer, which
has Qwen's chat template) is saved as an HF checkpoint and served on a loopback port exactly as
`python -m atomsearch_jax.serve` does. Workloads (greedy, at most --max_tokens completion tokens, EOS
possible): "chat" = the world's questions as short user turns (decode-bound); "judge" = RRM grading
prompts for them (~500 prompt tokens: prefill-bound). For each client concurrency: requests/s,
completion tokens/s, mean latency, and how many generate calls served them. "direct" is the same
prompts through `Sampler.generate` one at a time in process (no HTTP, no batching). Every batch size
is compiled first (`ChatService.warmup` plus this workload's prompt bucket), and every level runs
twice untimed before the timed pass.

    python scripts/bench_serve.py                            # chat, concurrency 1, 8, 32; 64 requests
    python scripts/bench_serve.py --workload=judge --max_tokens=32
    python scripts/bench_serve.py --quick                    # concurrency 1 and 8; 16 requests
"""
from __future__ import annotations

import concurrent.futures
import tempfile
import time

from absl import app, flags

from bench_util import print_table, probe_machine

flags.DEFINE_list("concurrency", ["1", "8", "32"], "Client threads sending requests at once.")
flags.DEFINE_integer("requests", 64, "Timed requests per concurrency level.")
flags.DEFINE_enum("workload", "chat", ["chat", "judge"], "Request kind (see the module docstring).")
flags.DEFINE_integer("max_tokens", 64, "Completion tokens per request.")
flags.DEFINE_integer("hidden", 256, "Model width.")
flags.DEFINE_integer("layers", 4, "Decoder layers.")
flags.DEFINE_integer("max_batch", 32, "Server rows per generate call.")
flags.DEFINE_integer("max_len", None, "Server context (KV cache slots); default 256 for chat, 1024 for judge.")
flags.DEFINE_list("prompt_buckets", None, "Server prompt buckets (default: powers of two).")
flags.DEFINE_float("batch_wait_ms", 5.0, "Server batching wait.")
flags.DEFINE_bool("quick", False, "Concurrency 1 and 8, 16 requests.")
FLAGS = flags.FLAGS


def build_checkpoint(directory: str) -> list[list[dict]]:
    """Writes a random model + the world tokenizer to `directory`; returns the workload's conversations."""
    import jax

    from atomsearch_jax.data.world import build_world, train_tokenizer
    from atomsearch_jax.formats import AtomicThought
    from atomsearch_jax.model import init_params, save_hf_checkpoint, tiny_config
    from atomsearch_jax.rewards import build_grading_messages
    from transformers import AutoTokenizer

    world = build_world()
    train_tokenizer(world, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    vocab = -(-len(tokenizer) // 64) * 64
    cfg = tiny_config(vocab_size=vocab, hidden_size=FLAGS.hidden, intermediate_size=FLAGS.hidden * 11 // 4,
                      num_layers=FLAGS.layers, num_heads=8, num_kv_heads=2, eos_token_id=tokenizer.eos_token_id)
    save_hf_checkpoint(cfg, init_params(cfg, jax.random.PRNGKey(0)), directory)
    records = world.splits["train"]
    if FLAGS.workload == "chat":
        return [[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": r.question}]
                for r in records]
    thoughts = (AtomicThought("PLAN", "search for the first hop", 0),
                AtomicThought("OBSERVATION", "the result names the entity", 1),
                AtomicThought("VERIFICATION", "the answer matches both hops", 2))
    return [build_grading_messages(r.question, thoughts, golden_answers=r.golden_answers, trajectory=r.question,
                                   version="rrm_v1", show_gold=True, max_trajectory_chars=2000)
            for r in records]


def run_clients(url: str, conversations: list[list[dict]], concurrency: int) -> tuple[float, list[dict]]:
    """(wall seconds, response bodies) for all conversations sent by `concurrency` threads."""
    import threading

    import requests

    local = threading.local()

    def send(messages: list[dict]) -> tuple[float, dict]:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        t = time.perf_counter()
        r = session.post(f"{url}/v1/chat/completions", json={"messages": messages, "temperature": 0,
                                                             "max_tokens": FLAGS.max_tokens}, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - t, r.json()

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(send, conversations))
    wall = time.perf_counter() - start
    return wall, [dict(body, latency=latency) for latency, body in results]


def main(argv: list[str]) -> None:
    del argv
    from atomsearch_jax.serving import ChatServer, build_service
    print(probe_machine().line(), flush=True)

    levels = [1, 8] if FLAGS.quick else [int(c) for c in FLAGS.concurrency]
    n_requests = 16 if FLAGS.quick else FLAGS.requests
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        conversations = build_checkpoint(directory)
        max_len = FLAGS.max_len or (256 if FLAGS.workload == "chat" else 1024)
        service = build_service(directory, model_name="bench", max_len=max_len, max_batch=FLAGS.max_batch,
                                batch_wait_s=FLAGS.batch_wait_ms / 1000,
                                prompt_buckets=[int(b) for b in FLAGS.prompt_buckets] if FLAGS.prompt_buckets else None)
        timed = [conversations[i % len(conversations)] for i in range(n_requests)]
        prompt_tokens = [len(service.prompt_ids(m)) for m in timed]

        prompts = [service.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in timed]
        for size in service.warmup():  # what `serve` does before listening; then this workload's prefill bucket
            service.sampler.generate(prompts[:1] * size, max_new_tokens=2, temperature=0.0)
        direct, tokens = float("inf"), 0
        for _ in range(2):  # the faster of two passes (the machine is shared)
            start = time.perf_counter()
            tokens = sum(len(service.sampler.generate([p], max_new_tokens=FLAGS.max_tokens, temperature=0.0)[0].tokens)
                         for p in prompts)
            direct = min(direct, time.perf_counter() - start)
        rows.append(["direct", n_requests, n_requests, n_requests / direct, tokens / direct, direct / n_requests])

        with ChatServer(service) as server:
            for level in levels:
                for _ in range(2):  # compile every batch-size bucket this level produces
                    run_clients(server.url, timed, level)
                calls_before = service.batcher.stats["calls"]
                wall, bodies = run_clients(server.url, timed, level)
                calls = service.batcher.stats["calls"] - calls_before
                tokens = sum(b["usage"]["completion_tokens"] for b in bodies)
                latency = sum(b["latency"] for b in bodies) / len(bodies)
                rows.append([f"server c={level}", n_requests, calls, n_requests / wall, tokens / wall, latency])
    print(f"workload {FLAGS.workload}; model: hidden {FLAGS.hidden}, {FLAGS.layers} layers, float32; max_len {max_len}; "
          f"prompt buckets {FLAGS.prompt_buckets or 'powers of two'}; prompts {min(prompt_tokens)}-"
          f"{max(prompt_tokens)} tokens; greedy, <= {FLAGS.max_tokens} new tokens")
    print_table(["mode", "requests", "generate calls", "req/s", "completion tok/s", "mean latency s"], rows)
    best = max(rows[1:], key=lambda r: r[3])
    print(f"RESULT serve workload={FLAGS.workload} direct_req_s={rows[0][3]:.2f} c1_req_s={rows[1][3]:.2f} best_req_s={best[3]:.2f} "
          f"best_mode={best[0].split()[-1]} speedup_vs_c1={best[3] / rows[1][3]:.1f}")


if __name__ == "__main__":
    app.run(main)
