"""Test-wide setup: 8 forced CPU devices (for mesh tests) and the shared-data location.

XLA_FLAGS must be set before jax initialises its backend, hence at conftest import.
"""
import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

# Subprocesses started by tests (`python -m atomsearch_jax.<tool>`) import this checkout's package, not
# whichever checkout an editable install points at.
_REPO = str(pathlib.Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, os.environ.get("PYTHONPATH")) if p)

# One persistent XLA compilation cache per test run, shared by the xdist workers (which inherit the
# controller's environment) and every subprocess they start: the CLI and multi-process tests compile the
# same tiny programs again and again. Made empty here and removed at the end of the run, so nothing carries
# over between runs (or into a user's jobs).
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="atomsearch_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(
    os.environ.get("ATOMSEARCH_SHARED_DATA", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """Path to ../shared/data; skips the test when it is absent (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(shared_data: pathlib.Path) -> pathlib.Path:
    path = shared_data / "qwen2.5_tokenizer" / "Qwen2.5-0.5B-Instruct"
    if not (path / "vocab.json").is_file():
        pytest.skip(f"Qwen2.5 tokenizer files not found at {path}")
    return path


@pytest.fixture(scope="session")
def default_world():
    """The synthetic world of WorldConfig() (built once per session)."""
    from atomsearch_jax.data.world import build_world
    return build_world()


@pytest.fixture(scope="session")
def default_world_retriever(default_world):
    """BM25 over the default world's corpus."""
    from atomsearch_jax.search import BM25Retriever
    return BM25Retriever.from_documents(default_world.corpus)


@pytest.fixture(scope="session")
def default_world_tokenizer(default_world, tmp_path_factory):
    """The BPE tokenizer trained on the default world, loaded with transformers."""
    from transformers import AutoTokenizer

    from atomsearch_jax.data.world import train_tokenizer
    return AutoTokenizer.from_pretrained(train_tokenizer(default_world, tmp_path_factory.mktemp("world_tok")))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
