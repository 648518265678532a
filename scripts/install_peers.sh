#!/usr/bin/env bash
# Installs the benchmarks' optional peers into their own virtualenv layered over an existing one:
#   scripts/install_peers.sh [BASE_VENV] [PEERS_VENV]     (defaults: ./venv, ./venv_peers)
# then run a benchmark with PEERS_VENV/bin/python. The peers venv sees every package of BASE_VENV (a .pth
# file) and adds google-tunix (the generation peer) and numba (bm25s' fastest retrieve backend) without
# their pinned dependencies: google-tunix 0.1.7 would otherwise move transformers/safetensors/tokenizers
# of the base venv. Only the modules tunix's sampler and Qwen2 model import are added.
set -euo pipefail
base=$(cd "${1:-venv}" && pwd)
peers=${2:-venv_peers}
py=$("$base/bin/python" -c 'import sys; print(sys.executable)')
"$py" -m venv "$peers"
site=$("$peers/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/zz_base_venv.pth"
"$peers/bin/pip" install -q --no-deps google-tunix==0.1.7 jaxtyping wadler_lindig qwix google-metrax clu \
  sentencepiece perfetto pandas numba llvmlite
"$peers/bin/python" -c 'import numba, tunix.generate.sampler, tunix.models.qwen2.params; print("peers ok")'
