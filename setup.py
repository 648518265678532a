"""atomsearch_jax: RL for deep-research search agents (Atom-Searcher, ReSearch, Search-R1) in JAX."""
from setuptools import find_packages, setup

setup(
    name="atomsearch_jax",
    version="0.1.0",
    description="JAX/Flax, TPU-native RL training of LLM search agents with atomic-thought rewards.",
    packages=find_packages(include=["atomsearch_jax", "atomsearch_jax.*"]),
    package_data={"atomsearch_jax.kernels": ["*.cc", "*.h"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6.0,<0.11",
        "flax>=0.10.4,<0.13",
        "optax>=0.2.4,<0.3",
        "orbax-checkpoint>=0.11.0,<0.13",
        "transformers>=4.50,<6",
        "tensorflow-datasets>=4.9.6,<5",
        "grain>=0.2.10,<0.3",
        "absl-py>=2.1,<3",
        "ml-collections>=0.1.1,<2",
        "safetensors>=0.4,<1",
        "numpy>=1.26,<3",
        "scipy>=1.11",
        "ml_dtypes>=0.4",
        "importlib_resources>=6.0",
        "bm25s>=0.2.10,<0.4",
        "numba>=0.60,<1",          # the BM25 scoring kernel (search/bm25_kernel.py)
        "PyStemmer>=2.2,<4",
        "pyarrow>=15",
        "tqdm>=4.66",
        "requests>=2.31,<3",
        "tensorboardX>=2.6,<3",
        "etils[epath]>=1.7",  # every run path (local or gs://, s3://) goes through etils.epath
        "fsspec>=2023.1",
        "jinja2>=3.1,<4",          # transformers' apply_chat_template (every prompt)
        "matplotlib>=3.7,<4",      # the job's report plots
        "scipy-openblas32>=0.3.27",  # the OpenBLAS that CPU dense products call (atomsearch_jax/kernels)
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "hypothesis>=6.100,<7",
            "torch>=2.4,<2.15",
            "rank_bm25>=0.2.2,<0.3",
        ],
        # Benchmark peers (scripts/bench_generate.py, bench_search.py). google-tunix pins transformers and
        # safetensors below this project's; scripts/install_peers.sh installs it into its own venv instead.
        "peers": ["google-tunix==0.1.7", "numba>=0.60"],
        "cuda": ["jax[cuda12]>=0.6.0,<0.11"],
        # gs:// work directories: epath reads/writes through gcsfs, TensorBoard through google-cloud-storage.
        "gcs": ["gcsfs>=2023.1", "google-cloud-storage>=2.10"],
        "tpu": ["jax[tpu]>=0.6.0,<0.11", "gcsfs>=2023.1", "google-cloud-storage>=2.10"],
    },
)
