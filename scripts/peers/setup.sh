#!/usr/bin/env bash
# Two Python virtual environments from PyPI for the real peers (optional; never in CI):
#   scripts/peers/.venv-crypten: crypten 0.4.1 + torch 2.1.2 (CPU use; PyPI's torch wheel
#                                brings NVIDIA's CUDA libraries: about 5 GB on disk)
#   scripts/peers/.venv-spu:     spu 0.9.5 + the jax it pins (jax[cpu] <= 0.4.34): about 1 GB
# Separate environments because spu pins numpy < 2 and jax while torch brings its own
# stack. Needs python3 (3.11 tested for wheel availability: crypten is pure Python,
# spu 0.9.5 ships cp311 manylinux x86_64 wheels) with the venv module.
#
# usage: scripts/peers/setup.sh [crypten|spu|both]   (default both)
#
# Patched while installing (see README.md): crypten 0.4.1 declares a dependency on the
# PyPI package `sklearn`, which PyPI now refuses to install ("use scikit-learn"), so
# crypten is installed with --no-deps and its dependencies are listed here, with
# scikit-learn instead. crypten 0.4.1 imports torch.onnx's symbolic registry from the
# place torch >= 1.13 keeps it (it tries both), so torch 2.1 needs no source patch for the
# parts the scripts use; the smoke test below checks that.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
what="${1:-both}"
py="${PYTHON:-python3}"

crypten() {
    local v="$here/.venv-crypten"
    echo "== $v"
    "$py" -m venv "$v"
    "$v/bin/pip" install -q --upgrade pip
    "$v/bin/pip" install -q "torch==2.1.2" "torchvision==0.16.2" "numpy<2"
    "$v/bin/pip" install -q --no-deps "crypten==0.4.1"
    # "numpy<2" again here: without it pip upgrades numpy to 2.x for the newest pandas /
    # scikit-learn / onnx / ml-dtypes, and torch 2.1.2 (built against numpy 1.x) then fails
    # with "Numpy is not available" (found on the first run, 2026-11-24); ml-dtypes 0.5.x is the
    # line that both numpy 1.26 and the newest onnx (float4_e2m1fn) accept
    "$v/bin/pip" install -q "numpy<2" "omegaconf>=2.0.6" "onnx>=1.7.0" "pandas>=1.2.2" "pyyaml>=5.3.1" \
        tensorboard future "scipy>=1.6.0" scikit-learn "ml-dtypes>=0.5,<0.6"
    "$v/bin/python" - <<'PY'
import crypten, crypten.mpc, torch
crypten.init()
x = crypten.cryptensor(torch.tensor([1.5, -2.0]))
assert torch.allclose(x.get_plain_text(), torch.tensor([1.5, -2.0]), atol=1e-3)
import numpy as np
assert np.__version__.startswith("1."), np.__version__
torch.from_numpy(np.zeros(2, np.float32))  # torch 2.1.2 needs numpy 1.x
print("crypten", crypten.__version__ if hasattr(crypten, "__version__") else "0.4.1", "torch", torch.__version__, "ok")
PY
}

spu() {
    local v="$here/.venv-spu"
    echo "== $v"
    "$py" -m venv "$v"
    "$v/bin/pip" install -q --upgrade pip
    "$v/bin/pip" install -q "spu==0.9.5"
    "$v/bin/python" - <<'PY'
import numpy as np
import spu
from spu import libspu
from spu.utils import simulation
sim = simulation.Simulator.simple(2, libspu.ProtocolKind.SEMI2K, libspu.FieldType.FM64)
out = simulation.sim_jax(sim, lambda a, b: a @ b)(np.eye(2), np.ones((2, 2)))
assert np.allclose(out, np.ones((2, 2)), atol=1e-3)
print("spu 0.9.5 ok")
PY
}

case "$what" in
    crypten) crypten ;;
    spu) spu ;;
    both) crypten; spu ;;
    *) echo "usage: $0 [crypten|spu|both]" >&2; exit 2 ;;
esac
du -sh "$here"/.venv-* 2>/dev/null || true
