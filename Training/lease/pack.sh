#!/bin/bash
# Pack what a lent GPU machine lacks into devrun/ (carried to it; the tool's limit is 64 MiB in all).
#   bash Training/lease/pack.sh [LABELMAP_FOLDER]     (default runs/labelmaps_ep)
# The machine's image has torch, scipy, scikit-image, scikit-learn, tqdm and pillow but not monai,
# nibabel or SimpleITK, and no network. SimpleITK's wheel (53 MB) and the label maps (30 MB as
# .nii.gz) only fit together xz-compressed: 28 MB (x86 filter) and 19 MB (maps gunzipped first).
set -euo pipefail
cd "$(dirname "$0")/../.."
LM=${1:-runs/labelmaps_ep}
[ -f "$LM/manifest.json" ] || { echo "$LM: no manifest.json (run Training/prepare_labelmaps.py first)" >&2; exit 2; }
grep -qx '/devrun/' .gitignore || { echo ".gitignore must list /devrun/" >&2; exit 2; }
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
rm -rf devrun && mkdir -p devrun
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
pip_get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d "$1" "$2"; }
pip_get devrun "monai==$(version monai)"
pip_get devrun "nibabel==$(version nibabel)"
pip_get "$TMP" "simpleitk==$(version SimpleITK)"
mkdir "$TMP/sitk" && (cd "$TMP/sitk" && unzip -q "$TMP"/simpleitk-*.whl && tar cf - . | xz --x86 --lzma2=preset=9e -T1 > "$OLDPWD/devrun/sitk.tar.xz")
mkdir "$TMP/lm" && cp "$LM"/*.json "$TMP/lm/"
for f in "$LM"/*.nii.gz; do b=$(basename "$f" .gz); gunzip -c "$f" > "$TMP/lm/$b"; done
(cd "$TMP/lm" && tar cf - . | xz -9 -T2 > "$OLDPWD/devrun/lm.tar.xz")
du -sh devrun/*
# the tool carries the tracked files too; over 64 MiB in all it refuses the call
total=$(( $(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1) + $(du -sb devrun | cut -f1) ))
echo "to carry: $(( total / 1048576 )) MiB with the tracked files (limit 64 MiB)"
[ "$total" -le $(( 64 * 1048576 )) ] || { echo "too large: prepare fewer maps (prepare_labelmaps.py --n-maps 2)" >&2; exit 3; }
