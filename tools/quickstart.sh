#!/usr/bin/env bash
# The quick start on the embedded data, from a fresh clone (2 CPU cores; README "Measured figures" has its time):
#   render the synthetic birds -> pretrain the DAMSM -> train AttnGAN -> generate from a caption.
# Each step resumes where it stopped if interrupted; run it again to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

echo "== 1/4 render the synthetic birds (data/synthbirds, CUB layout)"
$PY tools/prepare_data.py data=synthbirds
echo "== 2/4 pretrain the DAMSM text and image encoders at 32 px (runs/synthbirds/damsm)"
# palette swaps of its training images and part-colour heads: README "Quick start, with palette swaps"
$PY tools/train.py model=damsm data.recolour=1 model.attribute_weight=5 "$@"
echo "== 3/4 train AttnGAN, 32 -> 64 px (runs/synthbirds/attngan)"
$PY tools/train.py model=attngan "$@"
echo "== 4/4 generate"
$PY tools/generate.py 'caption="this bird has a green crown, black wings and a yellow belly"' num_images=8
$PY tools/generate.py caption="a red bird with blue wings and a yellow beak" num_images=8 \
    out_dir=runs/synthbirds/attngan/samples/red_blue overwrite=true
echo
echo "Done. Images, grid and word-attention figures are under outputs/generate/ (a new numbered folder per run)"
echo "and runs/synthbirds/attngan/samples/red_blue/ (replaced when the quick start runs again);"
echo "TensorBoard: tensorboard --logdir runs/"
