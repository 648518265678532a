"""Reward throughput: the RewardManager on a batch, and the HTTP judge client's concurrency.

    python scripts/bench_rewards.py [--batch 512 --judge-requests 64 --latency-ms 50 --error-rate 0.2]

1. RewardManager (Atom-Searcher format, DeepResearcher outcome, a function judge) on `--batch` synthetic
   trajectories: validation, answer extraction, metrics, atomic-thought parsing, aggregation.
2. HttpJudge against a loopback chat-completions server that answers after `--latency-ms` and fails a
   fraction `--error-rate` of first attempts with HTTP 500: requests/s with 1 worker vs 16, and the number
   of requests still failed after retries.
Last line: RESULT rewards manager_samples_s=… judge_req_s_w1=… judge_req_s_w16=… speedup=… errors=…
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import best_time, print_table, probe_machine  # noqa: E402

from atomsearch_jax.formats import AtomicThought, get_format  # noqa: E402
from atomsearch_jax.rewards import FunctionJudge, GradeRequest, HttpJudge, RewardInput, RewardManager  # noqa: E402


def synthetic_batch(n: int) -> list[RewardInput]:
    fmt = get_format("atom_searcher")
    doc = {"id": "d", "contents": '"Zebur"\nZebur is a city in the country Dazikia. ' + "filler text " * 30}
    batch = []
    for i in range(n):
        response = (fmt.render_turn([("PLAN", f"find the country of Zebur {i}"), ("ACTION", "search it")],
                                    queries=["which country is Zebur in"])
                    + fmt.render_results([[doc] * 3])
                    + fmt.render_turn([("OBSERVATION", "Zebur is in Dazikia"), ("VERIFICATION", "one source")],
                                      answer="Dazikia" if i % 3 else "Zovomark"))
        batch.append(RewardInput(f"Which country is Zebur {i} in?", ["Dazikia"], response, 300))
    return batch


class LatencyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops concurrent SYNs (a 1 s client stall)

    def __init__(self, latency_s: float, error_rate: float):
        super().__init__(("127.0.0.1", 0), LatencyHandler)
        self.latency_s, self.error_rate = latency_s, error_rate
        self.seen: set[str] = set()
        self.lock = threading.Lock()


class LatencyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][1]["content"]
        n = int(re.search(r"\((\d+) in total\)", user).group(1))
        with self.server.lock:
            first = user not in self.server.seen
            self.server.seen.add(user)
        time.sleep(self.server.latency_s)
        if first and random.random() < self.server.error_rate:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        content = json.dumps({"scores": [{"id": i + 1, "score": 7, "reason": "ok"} for i in range(n)]})
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--judge-requests", type=int, default=64)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--error-rate", type=float, default=0.2)
    args = ap.parse_args()
    random.seed(0)
    print(probe_machine().line(), flush=True)

    batch = synthetic_batch(args.batch)
    manager = RewardManager(get_format("atom_searcher"), judge=FunctionJudge(lambda q, t, g: [0.7] * len(t)),
                            total_steps=100)
    manager_s = best_time(lambda: manager.score(batch, 10), 3)

    thoughts = tuple(AtomicThought("PLAN", f"step {i}", 0) for i in range(4))
    rows, rates, errors = [], {}, 0
    server = LatencyServer(args.latency_ms / 1000, args.error_rate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for workers in (1, 16):
            server.seen.clear()
            requests = [GradeRequest(f"question {workers}-{i}", thoughts) for i in range(args.judge_requests)]
            judge = HttpJudge(base_url=f"http://127.0.0.1:{server.server_address[1]}", model="bench",
                              max_workers=workers, backoff_s=0.01, max_attempts=4, total_timeout_s=600)
            start = time.perf_counter()
            results = judge.grade(requests)
            seconds = time.perf_counter() - start
            failed = sum(not r.ok for r in results)
            retried = sum(r.attempts > 1 for r in results)
            errors += failed
            rates[workers] = len(requests) / seconds
            rows.append([f"http judge, {workers} worker(s)", len(requests), seconds, rates[workers], retried, failed])
    finally:
        server.shutdown()
    rows.insert(0, ["reward manager", args.batch, manager_s, args.batch / manager_s, 0, 0])
    print_table(["what", "samples", "seconds", "samples/s", "retried", "failed"], rows)
    print(f"RESULT rewards manager_samples_s={args.batch / manager_s:.0f} judge_req_s_w1={rates[1]:.1f} "
          f"judge_req_s_w16={rates[16]:.1f} speedup={rates[16] / rates[1]:.1f} errors={errors}")


if __name__ == "__main__":
    main()
