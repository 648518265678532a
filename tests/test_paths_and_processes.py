"""Cloud paths (a fake gs:// bucket backed by fsspec's in-memory file system, through etils.epath as
for a real bucket) and the process-level helpers of multi-process jobs, on one process."""
import json

import fsspec
import jax
import numpy as np
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry

from atomsearch_jax.model import init_params, load_hf_checkpoint, save_hf_checkpoint, tiny_config
from atomsearch_jax.parallel import local_mesh, make_mesh
from atomsearch_jax.parallel.multihost import (gather_objects, gather_rows, global_max, global_sums, process_bounds,
                                               process_share)
from atomsearch_jax.paths import copy_tree, is_url, local_copy, resolve
from atomsearch_jax.training import MetricsWriter


class FakeGCS(MemoryFileSystem):
    """gs:// paths kept in memory (a store of its own, not shared with memory://)."""

    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]

    def __init__(self, *args, **kwargs):  # gcsfs options such as finalize_on_close
        super().__init__()


@pytest.fixture
def bucket():
    from etils.epath import backend

    FakeGCS.store.clear()
    FakeGCS.pseudo_dirs[:] = [""]
    fsspec.register_implementation("gcs", FakeGCS, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()
    yield "gs://bucket/run"
    _registry.pop("gcs", None)  # later users get the real gcsfs again
    backend.fsspec_backend._get_filesystem.cache_clear()


def test_resolve_keeps_urls_and_anchors_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(resolve("gs://bucket/run")) == "gs://bucket/run" and is_url("gs://bucket/run")
    assert str(resolve("runs/a")) == str(tmp_path / "runs" / "a") and not is_url("runs/a")


def test_metrics_on_a_bucket_append_lines(bucket):
    writer = MetricsWriter(f"{bucket}/logs", tensorboard=False)
    writer.write(1, {"loss": 2.0})
    writer.write(2, {"loss": float("nan")})
    writer.close()
    lines = (epath.Path(bucket) / "logs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2] and json.loads(lines[1])["loss"] == "nan"
    # A resumed run's writer keeps what the file held.
    writer = MetricsWriter(f"{bucket}/logs", tensorboard=False)
    writer.write(3, {"loss": 1.0})
    assert len((epath.Path(bucket) / "logs" / "metrics.jsonl").read_text().splitlines()) == 3


def test_hf_checkpoint_round_trip_through_a_bucket(bucket):
    cfg = tiny_config()
    params = init_params(cfg, jax.random.PRNGKey(0))
    save_hf_checkpoint(cfg, params, f"{bucket}/hf_policy")
    assert (epath.Path(bucket) / "hf_policy" / "config.json").exists()
    loaded_cfg, loaded = load_hf_checkpoint(f"{bucket}/hf_policy")
    assert loaded_cfg.num_layers == cfg.num_layers
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_copy_tree_and_local_copy(bucket, tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a.txt").write_text("a")
    (tmp_path / "src" / "sub" / "b.txt").write_text("b")
    copy_tree(tmp_path / "src", f"{bucket}/tree")
    local = local_copy(f"{bucket}/tree")
    assert not is_url(local)
    assert (epath.Path(local) / "a.txt").read_text() == "a" and (epath.Path(local) / "sub" / "b.txt").read_text() == "b"
    assert local_copy(tmp_path / "src") == str(tmp_path / "src")


def test_process_bounds_cover_every_item_once_in_order():
    for n in (0, 1, 5, 8, 13):
        for count in (1, 2, 3, 8):
            bounds = [process_bounds(n, i, count) for i in range(count)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_single_process_helpers_are_identities():
    assert process_share([1, 2, 3]) == ([1, 2, 3], 0)
    assert global_max(7) == 7 and global_sums({"a": 1.5, "b": 2}) == {"a": 1.5, "b": 2.0}
    np.testing.assert_array_equal(gather_rows(np.arange(3)), np.arange(3))
    assert gather_objects([{"q": "x"}]) == [{"q": "x"}]
    mesh = make_mesh(1, -1, 1)
    assert local_mesh(mesh) is mesh
