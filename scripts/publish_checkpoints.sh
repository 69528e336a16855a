#!/usr/bin/env bash
# The ten RIFormer checkpoints mmpretrain published (model_cards/published_checkpoints.md) → the Hub: each downloaded,
# converted and folded into its deploy form (riformer-convert mmpretrain --reparameterize), evaluated on ImageNet-1k
# val with a bootstrap interval when IMAGENET_VAL is given (riformer-eval), and pushed with its model card
# (riformer-push; the card records the evaluation).
#
#   NAMESPACE=my-org IMAGENET_VAL=/data/imagenet/val scripts/publish_checkpoints.sh
#   MODELS="riformer-s12-in1k riformer-s12-in1k-384" NAMESPACE=my-org scripts/publish_checkpoints.sh  # a subset
#   TINY=1 scripts/publish_checkpoints.sh   # offline in 1–2 minutes: two of the ten, as small random mmpretrain-format
#                                           # stand-ins, a generated 3-class val folder, the local test Hub
set -euo pipefail

# ---- parameters ----------------------------------------------------------------------------------------------------
NAMESPACE=${NAMESPACE:-}              # Hub user or organisation to push to (needs a write token: hf auth login)
IMAGENET_VAL=${IMAGENET_VAL:-}        # ImageNet-1k val as <wnid>/*.JPEG folders; empty: pushed without an evaluation
WORK=${WORK:-riformer-checkpoints}    # downloads and converted folders
MODELS=${MODELS:-all}                 # repo names (first column below) to publish, or all
BOOTSTRAP=${BOOTSTRAP:-1000}
LICENSE=${LICENSE:-apache-2.0}        # mmpretrain's
TINY=${TINY:-0}

# repo name, evaluation resolution, mmpretrain's file (ImageNet-1k top-1 there: see published_checkpoints.md)
BASE=https://download.openmmlab.com/mmclassification/v1/riformer
CHECKPOINTS=(
  "riformer-s12-in1k      224 $BASE/riformer-s12_32xb128_in1k_20230406-6741ce71.pth"
  "riformer-s24-in1k      224 $BASE/riformer-s24_32xb128_in1k_20230406-fdab072a.pth"
  "riformer-s36-in1k      224 $BASE/riformer-s36_32xb128_in1k_20230406-fdfcd3b0.pth"
  "riformer-m36-in1k      224 $BASE/riformer-m36_32xb128_in1k_20230406-2fcb9d9b.pth"
  "riformer-m48-in1k      224 $BASE/riformer-m48_32xb128_in1k_20230406-2b9d1abf.pth"
  "riformer-s12-in1k-384  384 $BASE/riformer-s12_32xb128_in1k-384px_20230406-145eda4c.pth"
  "riformer-s24-in1k-384  384 $BASE/riformer-s24_32xb128_in1k-384px_20230406-bafae7ab.pth"
  "riformer-s36-in1k-384  384 $BASE/riformer-s36_32xb128_in1k-384px_20230406-017ed3c4.pth"
  "riformer-m36-in1k-384  384 $BASE/riformer-m36_32xb128_in1k-384px_20230406-66a6f764.pth"
  "riformer-m48-in1k-384  384 $BASE/riformer-m48_32xb128_in1k-384px_20230406-2e874826.pth"
)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "$TINY" = 1 ]; then
  # Two of the ten (an S at 224 px, an M at 384 px) as small random checkpoints in mmpretrain's layout, already
  # "downloaded"; a generated val folder of 3 classes; the test suite's Hub on 127.0.0.1 unless HF_ENDPOINT is set.
  WORK=${TINY_WORK:-$(mktemp -d -t riformer-checkpoints-XXXXXX)}
  MODELS="riformer-s12-in1k riformer-m36-in1k-384" NAMESPACE=${NAMESPACE:-test-user} BOOTSTRAP=100
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  python "$here/tiny_inputs.py" checkpoints "$WORK" riformer-s12_32xb128_in1k_20230406-6741ce71.pth \
    riformer-m36_32xb128_in1k-384px_20230406-66a6f764.pth
  IMAGENET_VAL=$WORK/imagenet/validation
  if [ -z "${HF_ENDPOINT:-}" ]; then
    python "$here/tiny_inputs.py" hub "$WORK/hub-url" & hub=$!
    trap 'kill $hub' EXIT
    while [ ! -s "$WORK/hub-url" ]; do sleep 0.2; done
    export HF_ENDPOINT=$(cat "$WORK/hub-url")
  fi
  export HF_HUB_DISABLE_XET=1 HF_HUB_OFFLINE=0
fi
if [ -z "$NAMESPACE" ]; then
  echo "error: set NAMESPACE to the Hub user or organisation to push to (NAMESPACE=my-org $0)." >&2
  exit 2
fi
mkdir -p "$WORK"

for entry in "${CHECKPOINTS[@]}"; do
  read -r name size url <<< "$entry"
  if [ "$MODELS" != all ] && [[ " $MODELS " != *" $name "* ]]; then continue; fi
  file=$WORK/$(basename "$url")
  [ -f "$file" ] || curl -L --fail -o "$file" "$url"
  if [ ! -f "$WORK/$name/config.json" ]; then  # converted in an earlier run: kept
    riformer-convert mmpretrain --reparameterize --image_size "$size" --checkpoint "$file" --output_dir "$WORK/$name"
  fi
  card=(--dataset imagenet-1k --license "$LICENSE")
  if [ -n "$IMAGENET_VAL" ]; then
    riformer-eval --model_name_or_path "$WORK/$name" --data_dir "$IMAGENET_VAL" --bootstrap "$BOOTSTRAP" \
      --output_json "$WORK/$name-imagenet-val.json"
    card+=(--eval_results "$WORK/$name-imagenet-val.json")
  fi
  riformer-push --model_dir "$WORK/$name" --repo_id "$NAMESPACE/$name" "${card[@]}" \
    --commit_message "$name: mmpretrain's $(basename "$url"), converted and re-parameterised"
done
