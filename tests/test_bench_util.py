"""The benchmarks' shared timing protocol (scripts/bench_util.py): warm-up, rotation, medians, ratios."""
from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
import bench_util  # noqa: E402


def test_alternate_warms_up_rotates_and_takes_medians():
    calls = []
    seconds = {"ours": iter([9.0, 1.0, 3.0, 2.0, 100.0, 5.0]), "peer": iter([9.0, 4.0, 6.0, 8.0, 5.0, 7.0])}

    def side(name):
        def run():
            calls.append(name)
            return next(seconds[name])
        return run

    timings = bench_util.alternate({"ours": side("ours"), "peer": side("peer")}, repeats=5, warmup=1)
    # Warm-up once each, then the order rotates every round.
    assert calls == ["ours", "peer", "ours", "peer", "peer", "ours", "ours", "peer", "peer", "ours", "ours", "peer"]
    ours, peer = timings["ours"]["s"], timings["peer"]["s"]
    assert ours.times == (1.0, 3.0, 2.0, 100.0, 5.0)  # the warm-up run (9.0) is not timed
    assert ours.median == 3.0 and peer.median == 6.0
    assert bench_util.speedup(ours, peer) == pytest.approx(2.0)
    assert ours.spread(6.0, "tok/s") == "2 (0.06-6) tok/s"


def test_alternate_keeps_named_phases():
    timings = bench_util.alternate({"a": lambda: {"call": 2.0, "decode": 1.0}}, repeats=3, warmup=0)
    assert set(timings["a"]) == {"call", "decode"} and timings["a"]["decode"].times == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="repeats"):
        bench_util.alternate({"a": lambda: 1.0}, repeats=0)


def test_mfu_and_forward_flops():
    probe = bench_util.MachineProbe(matmul_flops=1e11, bandwidth=1e10, cores=2)
    assert bench_util.mfu(5e10, 1.0, probe) == pytest.approx(0.5)

    class Cfg:
        hidden_size, dims_per_head, num_heads, num_kv_heads = 8, 2, 4, 2
        intermediate_size, num_layers, vocab_size = 16, 3, 10

    # Per layer: q,k,v (8*2*(4+4)=128) + o (4*2*8=64) + MLP (3*8*16=384) params; 2 rows x 5 tokens;
    # attention 2*2*B*H*D*T^2; LM head on the last token of each row.
    layer = 2 * (128 + 64 + 384) * 10 + 2 * 2 * 2 * 4 * 2 * 25
    assert bench_util.forward_flops(Cfg, 2, 5, full_logits=False) == 3 * layer + 2 * 8 * 10 * 2
    assert bench_util.forward_flops(Cfg, 2, 5, full_logits=True) == 3 * layer + 2 * 8 * 10 * 10
