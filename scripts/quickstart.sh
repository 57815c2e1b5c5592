#!/usr/bin/env bash
# Set up treeseek and run the main job on real images: features -> tuned model -> index -> report,
# then search the index with one image.
#   bash scripts/quickstart.sh                 Fashion-MNIST from Debian's dataset-fashion-mnist package
#   bash scripts/quickstart.sh IMAGE_FOLDER    your own folder with one subfolder per class
# PER_CLASS (default 100) caps the images per class and split so that it finishes in minutes on 2 cores.
# OUT names the output folder: demo-output/ for the demo, IMAGE_FOLDER-treeseek/ beside your folder.
set -euo pipefail
if [ $# -ge 1 ]; then
    [ -d "$1" ] || { echo "error: image folder not found: $1" >&2; exit 2; }
    set -- "$(realpath "$1")"  # before the cd below: a folder given relative to where the user stands
fi
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -ge 1 ]; then out=${OUT:-${1%/}-treeseek}; else out=${OUT:-demo-output}; fi
per_class=${PER_CLASS:-100}
ts=$(pwd)/.venv/bin/treeseek  # absolute: the last line tells the user to run it from anywhere
if [ $# -ge 1 ]; then
    $ts run "$1" --out "$out" --per-class "$per_class"
    # a picture of the test split: held out of the index, so the search shows neighbours, not the picture itself
    query=$(.venv/bin/python - "$out/features/test.npz" "$1" <<'PY'
import sys
from pathlib import Path
from treeseek.io.features import load_features
print(Path(sys.argv[2]) / str(load_features(sys.argv[1]).row_ids()[0]))
PY
)
else
    fmnist=/usr/share/datasets/fashion-mnist
    if [ ! -f "$fmnist/t10k-labels-idx1-ubyte.gz" ]; then
        sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
    fi
    $ts run "$fmnist" --dataset fashion-mnist --out "$out" --per-class "$per_class" \
        --taxonomy taxonomies/fashion-mnist.paths.tsv
    # the last test image, never in the index, saved under its true class: the grid shows it beside the results
    query=$(.venv/bin/python - "$fmnist" "$out" <<'PY'
import sys
from pathlib import Path
from treeseek.data.datasets import fashion_mnist
data = fashion_mnist(sys.argv[1])
name = data.class_names[data.labels[-1]].replace("/", "-")
path = Path(sys.argv[2]) / name / "query.png"
path.parent.mkdir(parents=True, exist_ok=True)
data.image(len(data) - 1).save(path)
print(path)
PY
)
fi
$ts search "$out/index" "$query" -k 8 --grid "$out/query.results.png"
echo
echo "outputs in $out/: report.md (+ .json), map_at_k.png, hierarchy.png, query.results.png, index/, model/, features/"
echo "search it in a browser: $ts serve $out/index   (then open http://127.0.0.1:8000/)"
echo "run treeseek as $ts, or after: source $(pwd)/.venv/bin/activate"
