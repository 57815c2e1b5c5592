#!/usr/bin/env bash
# Set up treeseek and run the main job end to end: features -> model -> evaluation -> search.
# Until the image pipeline lands, the features are synthetic with a planted class hierarchy;
# pass a directory holding your own train.npz / test.npz (and optionally taxonomy.json) to use yours.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${OUT:-demo-output}
data=${1:-}
ts=.venv/bin/treeseek
if [ -z "$data" ]; then
    data="$out/data"
    $ts synthetic "$data" --branching 4,4,5 --dim 128 --train-per-class 60 --test-per-class 20 --scale 4
fi
taxonomy=()
[ -f "$data/taxonomy.json" ] && taxonomy=(--taxonomy "$data/taxonomy.json")
$ts fit "$data/train.npz" --out "$out/model" --threshold "${THRESHOLD:-0.05}"
$ts evaluate "$out/model" "$data/test.npz" --database "$data/train.npz" "${taxonomy[@]}" \
    --k 1,10,100 --json "$out/evaluation.json" --plot "$out/map_at_k.png" --no-progress
$ts search "$out/model" "$data/train.npz" --query "$data/test.npz" -k 5 --json "$out/search.json" > "$out/search.txt"
head -n 12 "$out/search.txt"
echo
echo "outputs in $out/: model/ (hierarchy.png, hierarchy.nwk), evaluation.json, map_at_k.png, search.txt, search.json"
