#!/usr/bin/env bash
# Tune a bundled shrec model's thresholds.json on four simulated tomograms (seeds 95-98, never used for
# training or held-out scoring; 99-102 are the held-out seeds of `benchmarks/accuracy.py --seeds`), as the
# bundled ones were on 2026-12-03: each tomogram simulated as the held-out ones are, predicted, picked without
# thresholds with the model's own fit radius and density weight, then `evaluate --model` on the pooled picks
# writes the middle of each class's F1 plateau into WORK/model_NAME/thresholds.json. Copy that file into
# keras_ucaps/resources/models/NAME/ to bundle it.
#
# Usage: bash tools/tune_thresholds.sh WORK [NAME...]   (default: shrec-unet shrec-ucaps; about 4 min and
# 13 min for the two on a 2-core CPU). A NAME may also be a run folder (a fine-tuned model, say): its
# thresholds go into WORK/model_BASENAME/thresholds.json.
set -euo pipefail
work=${1:?usage: tune_thresholds.sh WORK [NAME...]}; shift
if [ $# -gt 0 ]; then models=("$@"); else models=(shrec-unet shrec-ucaps); fi
python=${PYTHON:-python3}
ku=("$python" -m keras_ucaps)
seeds=(95 96 97 98)
tomos=(); tomogram_options=()
for s in "${seeds[@]}"; do tomos+=("$work/sim/tune$s.mrc"); tomogram_options+=(--tomogram "$work/sim/tune$s.mrc"); done
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
for s in "${seeds[@]}"; do
  [ -f "$work/sim/tune$s.mrc" ] || "${ku[@]}" simulate --preset shrec --shape 128 256 256 --seed "$s" \
      --name "tune$s" --out "$work/sim" > /dev/null
done
"$python" - "$work" <<'EOF'
import sys
from pathlib import Path

work = Path(sys.argv[1])
rows = []
for i, table in enumerate(sorted((work / "sim").glob("tune*_particles.csv"))):
    lines = table.read_text().splitlines()
    rows += lines if i == 0 else lines[1:]
(work / "truth.csv").write_text("\n".join(rows) + "\n")
EOF
for model in "${models[@]}"; do
  if [ -d "$model" ]; then bundled=$model; m=$(basename "$model"); else bundled=$root/keras_ucaps/resources/models/$model; m=$model; fi
  [ -f "$work/maps_$m/tune98_labels.mrc" ] || "${ku[@]}" predict "$model" "${tomos[@]}" \
      --out "$work/maps_$m" > /dev/null 2>&1 || { echo "predict $m failed" >&2; exit 1; }
  # The model's own fit radius and density weight (a fine-tuned run has its source's in its thresholds.json,
  # written by fit --init-weights), else 1 and 0.
  read -r fit density < <("$python" -c "import sys
from keras_ucaps.picking.thresholds import read_thresholds, run_thresholds
path = run_thresholds(sys.argv[1])
t = read_thresholds(path) if path is not None else {}
print(t.get('fit_radius', 1), t.get('density_weight', 0))" "$bundled")
  labels=(); for s in "${seeds[@]}"; do labels+=("$work/maps_$m/tune${s}_labels.mrc"); done
  "${ku[@]}" pick "${labels[@]}" "${tomogram_options[@]}" --fit-radius "$fit" --density-weight "$density" \
      --out "$work/picks_$m.csv" > /dev/null
  rm -rf "$work/model_$m" && mkdir "$work/model_$m" && cp "$bundled/config.json" "$work/model_$m/"
  [ ! -f "$bundled/thresholds.json" ] || cp "$bundled/thresholds.json" "$work/model_$m/"
  "${ku[@]}" evaluate "$work/truth.csv" "$work/picks_$m.csv" --voxel-size 10 --classes "$work/sim/classes.json" \
      --model "$work/model_$m" \
      --fit-radius "$fit" --density-weight "$density" | tail -n 2
  echo "$m: $work/model_$m/thresholds.json"
done
