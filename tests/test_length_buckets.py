"""Length buckets: the widths minimise padding (checked against brute force) and batches are
deterministic, cover every row each epoch and never put a row in a bucket narrower than it."""
import itertools

import numpy as np
import pytest

from atomsearch_jax.data.length_buckets import BucketedBatches, bucket_widths


def padding(lengths, widths):
    widths = sorted(widths)
    return sum(min(w for w in widths if w >= n) - n for n in lengths)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_buckets", [1, 2, 3])
def test_widths_minimise_padding_like_brute_force(seed, n_buckets):
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([rng.integers(390, 460, 30), rng.integers(560, 640, 20)]).tolist()
    widths = bucket_widths(lengths, n_buckets, multiple=16)
    candidates = sorted({-(-n // 16) * 16 for n in lengths})
    best = min(padding(lengths, list(c) + [candidates[-1]])
               for r in range(n_buckets) for c in itertools.combinations(candidates[:-1], r))
    assert len(widths) <= n_buckets and widths[-1] >= max(lengths)
    assert all(w % 16 == 0 for w in widths)
    assert padding(lengths, widths) == best


def test_bimodal_lengths_get_one_bucket_per_mode():
    lengths = [400, 410, 420, 600, 610, 620]
    assert bucket_widths(lengths, 2, multiple=16) == [432, 624]
    assert bucket_widths(lengths, 1, multiple=64) == [640]


def test_batches_deterministic_cover_each_epoch_and_fit():
    lengths = np.random.default_rng(0).integers(10, 100, 53)
    widths = bucket_widths(lengths, 3)
    batches = BucketedBatches(lengths, widths, batch_size=8, seed=3)
    seen = set()
    for step in range(batches.batches_per_epoch):
        rows, width = batches.batch(step)
        assert len(rows) == 8 and width in widths
        assert np.all(lengths[rows] <= width)
        narrower = [w for w in widths if w < width]
        assert not narrower or np.all(lengths[rows] > max(narrower))  # each row sits in its own bucket
        seen.update(rows.tolist())
    assert seen == set(range(53))
    again = BucketedBatches(lengths, widths, batch_size=8, seed=3)
    for step in (0, 5, batches.batches_per_epoch + 2):
        np.testing.assert_array_equal(again.batch(step)[0], batches.batch(step)[0])
    assert not np.array_equal(batches.batch(0)[0], batches.batch(batches.batches_per_epoch)[0])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="longer than the widest"):
        BucketedBatches([10, 200], [64], batch_size=2)
    with pytest.raises(ValueError, match="n_buckets"):
        bucket_widths([10], 0)
