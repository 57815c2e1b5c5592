#!/usr/bin/env bash
# Create .venv and install treeseek into it (with extras given as $1, e.g. "test").
# Works on a fresh Debian with Python 3.11: installs python3-venv when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "error: treeseek needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "treeseek setup: creating .venv"
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv .venv
        else
            echo "error: python3 -m venv failed; install it with: sudo apt-get install python3-venv" >&2
            exit 1
        fi
    fi
fi
extras=${1:-}
# The web page's tests drive Debian's Chromium through playwright, which downloads no browser of its own.
if [[ ",$extras," == *",test,"* ]] && ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "note: no chromium, so the web page's browser tests will be skipped (sudo apt-get install chromium)" >&2
    fi
fi
# WordNet 3.0 (Debian's wordnet-base): ImageNet-style folders named n01443537 are read as their words
if [ ! -f /usr/share/wordnet/data.noun ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "treeseek setup: installing WordNet (wordnet-base)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            wordnet-base >/dev/null; } || echo "note: could not install wordnet-base; WordNet ids stay ids" >&2
    else
        echo "note: no WordNet, so folders named by WordNet ids stay ids (sudo apt-get install wordnet-base)" >&2
    fi
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
echo "treeseek setup: installing into .venv (torch, FAISS, numpy... a few minutes the first time)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# The CPU build of torch: small and quick to install; a plain 'torch' would pull a multi-GB CUDA build.
.venv/bin/python -c 'import torch' 2>/dev/null || \
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
echo "treeseek setup: done (run .venv/bin/treeseek, or source .venv/bin/activate first)"
