"""Serves an HF Qwen2 checkpoint with the OpenAI chat-completions API, on the JAX sampler.

  python -m atomsearch_jax.serve --model_path=checkpoints/judge --port=8001

Then point `atomsearch_jax.rewards.HttpJudge(base_url="http://127.0.0.1:8001", model=<served name>)` (or
any OpenAI-style client) at it. Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health.
Concurrent requests share generate calls (see atomsearch_jax.serving.batcher). Binds 127.0.0.1
unless --host says otherwise. Before listening it compiles the decode loop for every batch size (--warmup);
the first request of each new prompt-length bucket still compiles its prefill.
"""
from __future__ import annotations

import time

from absl import app, flags, logging

from atomsearch_jax.distributed_flags import initialize_from_flags
from atomsearch_jax.httpd import write_port_file
from atomsearch_jax.serving import ChatServer, ServeLimits, build_service

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "HF Qwen2 checkpoint directory (config.json + safetensors).", required=True)
flags.DEFINE_string("tokenizer_path", None, "Tokenizer directory with a chat template (default: --model_path).")
flags.DEFINE_string("served_model_name", None, "Name clients put in 'model' (default: the checkpoint's directory name).")
flags.DEFINE_string("host", "127.0.0.1", "Address to bind; 0.0.0.0 exposes the server to the network.")
flags.DEFINE_integer("port", 8001, "Port to bind; 0 picks a free port (see --port_file).")
flags.DEFINE_string("port_file", None, "Write the bound port to this file once listening.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter and compute dtype.")
flags.DEFINE_integer("max_len", 4096, "Tokens per sequence (prompt + completion): the KV cache length.")
flags.DEFINE_integer("max_batch", 32, "Rows (requests x n) per generate call.")
flags.DEFINE_float("batch_wait_ms", 5.0, "Longest a request waits for others to share its generate call.")
flags.DEFINE_integer("segment_steps", 64, "Decode steps between host-side stop-string checks.")
flags.DEFINE_list("prompt_buckets", None, "Padded prompt lengths, e.g. 256,512,768,1024 (default: powers of two).")
flags.DEFINE_bool("warmup", True, "Compile every batch size before listening (first requests then do not stall).")
flags.DEFINE_integer("mesh_data", 1, "Mesh 'data' axis size (rows are split over data x fsdp).")
flags.DEFINE_integer("mesh_fsdp", -1, "Mesh 'fsdp' axis size; -1 = the remaining devices.")
flags.DEFINE_integer("mesh_tensor", 1, "Mesh 'tensor' axis size (tensor-parallel weights).")
flags.DEFINE_integer("max_tokens", None, "Largest completion length a request may ask for (default: what fits).")
flags.DEFINE_integer("max_n", ServeLimits.max_n, "Largest n (choices per request).")
flags.DEFINE_integer("max_messages", ServeLimits.max_messages, "Most messages in one request.")
flags.DEFINE_integer("max_body_bytes", ServeLimits.max_body_bytes, "Largest accepted request body.")
flags.DEFINE_integer("max_connections", ServeLimits.max_connections, "Most simultaneously open connections.")
flags.DEFINE_integer("max_queued_requests", ServeLimits.max_queued_requests, "Waiting requests before 503s.")
flags.DEFINE_float("request_timeout_s", ServeLimits.request_timeout_s, "Longest a request waits (503 after).")


def main(argv: list[str]) -> None:
    del argv
    # Multi-process: the model is loaded onto the global mesh and each process serves a replica on its
    # own devices (on its own host's --port; put a load balancer in front).
    initialize_from_flags()
    limits = ServeLimits(max_body_bytes=FLAGS.max_body_bytes, max_messages=FLAGS.max_messages,
                         max_tokens=FLAGS.max_tokens, max_n=FLAGS.max_n, max_connections=FLAGS.max_connections,
                         max_queued_requests=FLAGS.max_queued_requests, request_timeout_s=FLAGS.request_timeout_s)
    service = build_service(FLAGS.model_path, tokenizer_path=FLAGS.tokenizer_path, model_name=FLAGS.served_model_name,
                            dtype=FLAGS.dtype, max_len=FLAGS.max_len, max_batch=FLAGS.max_batch,
                            batch_wait_s=FLAGS.batch_wait_ms / 1000, segment_steps=FLAGS.segment_steps,
                            mesh_shape=(FLAGS.mesh_data, FLAGS.mesh_fsdp, FLAGS.mesh_tensor),
                            prompt_buckets=[int(b) for b in FLAGS.prompt_buckets] if FLAGS.prompt_buckets else None,
                            limits=limits)
    if FLAGS.warmup:
        start = time.perf_counter()
        sizes = service.warmup()
        logging.info("compiled batch sizes %s in %.1f s", sizes, time.perf_counter() - start)
    server = ChatServer(service, host=FLAGS.host, port=FLAGS.port)
    if FLAGS.port_file:
        write_port_file(FLAGS.port_file, server.port)
    logging.info("serving %s as %r on %s (max_len %d, max_batch %d)", FLAGS.model_path, service.model_name,
                 server.url, FLAGS.max_len, FLAGS.max_batch)
    server.serve_until_interrupted()


if __name__ == "__main__":
    app.run(main)
