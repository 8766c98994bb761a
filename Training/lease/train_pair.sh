#!/bin/bash
# Train recipes side by side on one lent GPU (one run leaves the GPU half idle while it synthesizes),
# keep each run's weights every checkpoint_every steps, and copy the last and the one nearest 80 %
# of each run to OUTDIR, each with its SHA-256 sidecar (two runs fill the 8 files the tool brings
# back; the logs go to standard output). Run on the lent machine, from the repo root, devrun/ carried (pack.sh):
#   bash Training/lease/train_pair.sh cuda SECONDS "$OUT" RECIPE.json [RECIPE.json ...]
# SECONDS counts from the start of this script; the runs have no validation (no real images there).
# Environment: WORK (run folder, default runs/gpu), WARM / TIMED (timing steps), MAX_STEPS (a cap).
set -u
DEV=$1; SECS=$2; OUTD=$3; shift 3
T0=$(date +%s)
cd "$(dirname "$0")/../.."
WORK=${WORK:-runs/gpu}; SITE=/tmp/site
if [ -f devrun/lm.tar.xz ] && [ ! -d runs/labelmaps_ep ]; then  # a bare lent machine: unpack pack.sh's output
  mkdir -p $SITE runs
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE devrun/*.whl || exit 3
  python3 - <<'PY' || exit 4
import lzma, tarfile
for src, dst in (("devrun/sitk.tar.xz", "/tmp/site"), ("devrun/lm.tar.xz", "runs/labelmaps_ep")):
    with lzma.open(src) as f, tarfile.open(fileobj=f, mode="r|") as t:
        t.extractall(dst, filter="data")
PY
  ls runs/labelmaps_ep/*.nii | xargs -P 16 -n 8 gzip -1 || exit 5
  export PYTHONPATH=$SITE
fi
python3 -c "import SimpleITK, monai, nibabel, torch; print('torch', torch.__version__, torch.cuda.is_available())" || exit 6
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
echo "setup $(( $(date +%s) - T0 )) s"
DEADLINE=$(( T0 + SECS ))
export OMP_NUM_THREADS=6 PYTHONUNBUFFERED=1
pids=(); mkdir -p "$WORK"
for r in "$@"; do
  python3 Training/time_boxed_train.py "$r" --deadline $DEADLINE --work "$WORK" --device "$DEV" --no-validation \
    --warm "${WARM:-5}" --timed "${TIMED:-20}" ${MAX_STEPS:+--max-steps "$MAX_STEPS"} > "$WORK/$(basename "$r" .json).log" 2>&1 &
  pids+=($!)
done
snapshot() {  # save_checkpoint writes latest.pt atomically, so a copy is whole
  for d in "$WORK"/*/; do
    [ -f "$d/latest.pt" ] || continue
    m=$(stat -c %Y "$d/latest.pt"); [ -f "$d/snap_$m.pt" ] || cp "$d/latest.pt" "$d/snap_$m.pt"
  done
}
( while true; do snapshot; sleep 5; done ) &
W=$!
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=$?; done
kill $W; snapshot
echo "train rc $rc at $(( $(date +%s) - T0 )) s"
python3 - "$OUTD" "$WORK" <<'PY'
import shutil, sys, torch
from pathlib import Path
from SpineSynthSegLib.model import ModelMeta, write_hash_sidecar
out = Path(sys.argv[1])
for d in sorted(p for p in Path(sys.argv[2]).iterdir() if p.is_dir()):
    snaps = {ModelMeta.from_json(torch.load(f, map_location="cpu", weights_only=True)["meta"]).step: f
             for f in d.glob("snap_*.pt")}
    print(d.name, "snapshots at steps", sorted(snaps))
    if not snaps:
        continue
    last = max(snaps)
    for s in dict.fromkeys([last, min(snaps, key=lambda s: abs(s - 0.8 * last))]):
        dst = out / f"{d.name}_step{s:05d}.pt"
        shutil.copy(snaps[s], dst)  # the recipe that ran is in the checkpoint's metadata
        write_hash_sidecar(dst)
PY
tail -n 4 "$WORK"/*.log
ls -la "$OUTD"
echo "total $(( $(date +%s) - T0 )) s"
exit $rc
