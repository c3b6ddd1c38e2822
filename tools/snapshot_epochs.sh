#!/usr/bin/env bash
# Keep each finished epoch's weights of running fits, for F1 against training time
# (benchmarks/learning_f1.py): RUN/epochs/NN/ gets weights_best.keras (the run's weights_last.keras after
# epoch NN), config.json and the checkpoint's state.json. Polls every 30 s (--every S) until killed, or once
# (--once).
# fit writes weights_last.keras, then checkpoint/state.json: a copy counts only when the weights are no newer
# than the state, before and after copying (else the next epoch is being saved; the next poll takes it).
# Usage: bash tools/snapshot_epochs.sh [--every S | --once] RUN [RUN ...]
set -uo pipefail
every=30; once=0
case ${1:-} in
  --every) every=$2; shift 2 ;;
  --once) once=1; shift ;;
esac
[ $# -gt 0 ] || { echo "usage: $0 [--every S | --once] RUN [RUN ...]" >&2; exit 2; }
keep_epoch='
import json, os, shutil, sys, zipfile
from pathlib import Path
run = Path(sys.argv[1])
state, weights = run / "checkpoint" / "state.json", run / "weights_last.keras"
def settled():
    return state.is_file() and weights.is_file() and os.path.getmtime(weights) <= os.path.getmtime(state)
if not settled():
    sys.exit()
epoch = json.loads(state.read_text())["epoch"]
keep = run / "epochs" / f"{epoch:02d}"
if (keep / "weights_best.keras").is_file():
    sys.exit()
keep.mkdir(parents=True, exist_ok=True)
for f in (run / "config.json", state):
    shutil.copy(f, keep / f.name)
shutil.copy(weights, keep / "partial.keras")
if settled() and json.loads(state.read_text())["epoch"] == epoch and zipfile.is_zipfile(keep / "partial.keras"):
    os.replace(keep / "partial.keras", keep / "weights_best.keras")
    print(f"kept {keep}", flush=True)
'
while true; do
  for run in "$@"; do
    python3 -c "$keep_epoch" "$run" | sed "s/^/$(date +%T) /"
  done
  [ $once = 1 ] && break
  sleep "$every"
done
