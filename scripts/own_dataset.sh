#!/usr/bin/env bash
# Your own image folder → a RIFormer on the Hub, in five steps (README, "Your own dataset"):
#   1. fine-tune a PoolFormer teacher on your classes     (it also fixes the student's size and initialises it)
#   2. convert the official GFNet-H-B, fine-tune it on your classes (the logit teacher)
#   3. distil a RIFormer from both with the paper's recipe, its schedule scaled to the run
#   4. evaluate it, with a bootstrap interval
#   5. export it to ONNX and INT8, push it to the Hub
#
#   DATA=my_images REPO_ID=me/riformer-s12-mine scripts/own_dataset.sh
#   TINY=1 scripts/own_dataset.sh        # the same commands offline in 1–2 minutes: generated shapes, small random
#                                        # stand-ins for the downloads, the test suite's local Hub (what CI runs)
#
# Commands come from `pip install riformer_hf[onnx]` (or ./run.sh's .venv/bin). For a GPU, see the README. Each step
# writes a folder of its own under WORK and refuses one that holds an earlier run: after an interruption, run the
# command Ctrl-C printed (it resumes from the last checkpoint), then the steps after it.
set -euo pipefail

# ---- parameters ----------------------------------------------------------------------------------------------------
DATA=${DATA:-my_images}                            # DATA/train/<class>/*.jpg and DATA/validation/<class>/*.jpg
WORK=${WORK:-own-dataset}                          # every output goes under here (a new folder: runs never overwrite)
MODEL=${MODEL:-s12}                                # the student's size: s12, s24, s36, m36, m48 (and its recipe)
POOLFORMER=${POOLFORMER:-sail/poolformer_$MODEL}   # the PoolFormer teacher of that size, to fine-tune
GFNET_CHECKPOINT=${GFNET_CHECKPOINT:-gfnet-h-b.pth}  # official GFNet-H-B weights (model_cards/published_checkpoints.md)
REPO_ID=${REPO_ID:-}                               # Hub repo for the student, e.g. me/riformer-s12-mine; empty: no push
TEACHER_EPOCHS=${TEACHER_EPOCHS:-10}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-30}
TEACHER_LR=${TEACHER_LR:-1e-4}                     # fine-tuning from ImageNet weights
STUDENT_LR=${STUDENT_LR:-2e-4}                     # the recipe's 1e-3 × batch / 1024 is made for batch 1024 from scratch
BATCH=${BATCH:-32}                                 # per device
WORKERS=${WORKERS:-2}                              # data-loader processes (decoding, augmentation)
BOOTSTRAP=${BOOTSTRAP:-1000}
TINY=${TINY:-0}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "$TINY" = 1 ]; then
  # Offline stand-ins: a generated 3-class folder, random small models "published" with 5 other classes (the PoolFormer
  # as a folder, GFNet as an official checkpoint), and the test suite's Hub on 127.0.0.1 unless HF_ENDPOINT is set.
  WORK=${TINY_WORK:-$(mktemp -d -t riformer-own-dataset-XXXXXX)}
  DATA=$WORK/images POOLFORMER=$WORK/poolformer-published GFNET_CHECKPOINT=$WORK/gfnet-h-b.pth
  REPO_ID=${REPO_ID:-test-user/riformer-tiny-shapes}
  TEACHER_EPOCHS=8 STUDENT_EPOCHS=12 TEACHER_LR=2e-3 STUDENT_LR=2e-3 BATCH=16 WORKERS=0 BOOTSTRAP=200
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  python "$here/tiny_inputs.py" own-dataset "$WORK"
  if [ -z "${HF_ENDPOINT:-}" ]; then
    python "$here/tiny_inputs.py" hub "$WORK/hub-url" & hub=$!
    trap 'kill $hub' EXIT
    while [ ! -s "$WORK/hub-url" ]; do sleep 0.2; done
    export HF_ENDPOINT=$(cat "$WORK/hub-url")
  fi
  export HF_HUB_DISABLE_XET=1 HF_HUB_OFFLINE=0
fi
mkdir -p "$WORK"
T=$SECONDS
took() { echo "== step $1 took $((SECONDS - T)) s" >&2; T=$SECONDS; }

# ---- 1. the PoolFormer teacher, fine-tuned on your classes (its head is re-initialised; the log names it) ----------
riformer-train --model_name_or_path "$POOLFORMER" --data_dir "$DATA" --output_dir "$WORK/teacher-poolformer" \
  --num_train_epochs "$TEACHER_EPOCHS" --learning_rate "$TEACHER_LR" --per_device_train_batch_size "$BATCH" \
  --dataloader_num_workers "$WORKERS"
took 1

# ---- 2. the GFNet-H-B teacher: converted from the official weights, fine-tuned on your classes ---------------------
riformer-convert gfnet --checkpoint "$GFNET_CHECKPOINT" --output_dir "$WORK/gfnet-h-b"
riformer-train --model_name_or_path "$WORK/gfnet-h-b" --data_dir "$DATA" --output_dir "$WORK/teacher-gfnet" \
  --num_train_epochs "$TEACHER_EPOCHS" --learning_rate "$TEACHER_LR" --per_device_train_batch_size "$BATCH" \
  --dataloader_num_workers "$WORKERS"
took 2

# ---- 3. the RIFormer student: the paper's recipe (label-free soft KD, module imitation, initialised from the
#         PoolFormer), with the imitation windows at the paper's 400/600 and 100/600 of this run ------------------------
riformer-train --recipe "riformer-$MODEL" --data_dir "$DATA" --output_dir "$WORK/student" \
  --teacher_model "$WORK/teacher-gfnet" --imitation_teacher "$WORK/teacher-poolformer" --init_from_teacher \
  --num_train_epochs "$STUDENT_EPOCHS" --feature_epochs $((STUDENT_EPOCHS * 400 / 600)) \
  --relation_epochs $((STUDENT_EPOCHS * 100 / 600)) --learning_rate "$STUDENT_LR" --per_device_train_batch_size "$BATCH" \
  --dataloader_num_workers "$WORKERS"
took 3

# ---- 4. its top-1 on the validation split, with a 95 % bootstrap interval ------------------------------------------
riformer-eval --model_name_or_path "$WORK/student" --data_dir "$DATA" --split validation --bootstrap "$BOOTSTRAP" \
  --output_json "$WORK/student-eval.json"
took 4

# ---- 5. ONNX and INT8 (compared on the validation split), then the deploy form to the Hub with its card -----------
riformer-export --model_name_or_path "$WORK/student" --output_dir "$WORK/student-onnx" --int8 \
  --calibration_data "$DATA" --eval_split validation
if [ -n "$REPO_ID" ]; then
  riformer-push --model_dir "$WORK/student" --repo_id "$REPO_ID"
else
  echo "REPO_ID is empty: not pushed. Push later with: riformer-push --model_dir $WORK/student --repo_id NAME" >&2
fi
took 5
echo "done: $WORK" >&2
