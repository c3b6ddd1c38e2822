#!/usr/bin/env bash
# A venv with DeepFinder (cryoet-deepfinder 0.2.1) for the comparisons: bash benchmarks/deepfinder_venv.sh [DIR]
set -euo pipefail
dir=${1:-.deepfinder-venv}
python3 -m venv "$dir"
"$dir/bin/pip" install -q 'tensorflow-cpu==2.21.0' 'tf-keras==2.21.*' 'h5py<3.15' mrcfile scikit-learn lxml matplotlib scipy openpyxl pandas scikit-image
"$dir/bin/pip" install -q --no-deps cryoet-deepfinder==0.2.1
echo "$dir/bin/python"
