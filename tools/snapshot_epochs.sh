#!/usr/bin/env bash
# Keep each finished epoch's weights of running fits, for F1 against training time
# (benchmarks/learning_f1.py): RUN/epochs/NN/ gets weights_best.keras (the run's weights_last.keras after
# epoch NN), config.json and the checkpoint's state.json. Polls every 30 s until killed.
# Usage: bash tools/snapshot_epochs.sh RUN [RUN ...]
set -uo pipefail
[ $# -gt 0 ] || { echo "usage: $0 RUN [RUN ...]" >&2; exit 2; }
while true; do
  for run in "$@"; do
    epoch=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['epoch'])" \
            "$run/checkpoint/state.json" 2>/dev/null) || continue
    keep=$run/epochs/$(printf %02d "$epoch")
    [ -f "$keep/weights_best.keras" ] || [ ! -f "$run/weights_last.keras" ] && continue
    mkdir -p "$keep" && cp "$run/config.json" "$run/checkpoint/state.json" "$keep/" \
      && cp "$run/weights_last.keras" "$keep/partial.keras" \
      && python3 -c "import json,sys,zipfile; s=json.load(open(sys.argv[2])); \
sys.exit(0 if zipfile.is_zipfile(sys.argv[1]) and s['epoch']==int(sys.argv[3]) else 1)" \
         "$keep/partial.keras" "$run/checkpoint/state.json" "$epoch" \
      && mv "$keep/partial.keras" "$keep/weights_best.keras" && echo "$(date +%T) kept $keep"
  done
  sleep 30
done
