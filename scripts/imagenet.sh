#!/usr/bin/env bash
# The paper's ImageNet-1k runs: RIFormer-S12 … M48 distilled for 600 epochs from GFNet-H-B (logit teacher, the official
# weights converted) and the PoolFormer of the student's size (imitation teacher and initialisation, sail/poolformer_*
# on the Hub, already in transformers' format), with --recipe riformer-MODEL, on 2 nodes × 8 GPUs through
# configs/accelerate_multi_node.yaml (batch 64 per GPU: the paper's 1024). Then top-1 on val/ with a bootstrap
# interval, and the deploy form to the Hub.
#
# Start it on every node, with that node's NODE_RANK; WORK must be on a filesystem both nodes see (node 0 prepares
# the teachers there, the checkpoints are written there and resumed from there):
#   MODEL=s12 IMAGENET=/data/imagenet WORK=/shared/riformer MAIN_PROCESS_IP=10.0.0.1 NODE_RANK=0 scripts/imagenet.sh
#   MODEL=s12 IMAGENET=/data/imagenet WORK=/shared/riformer MAIN_PROCESS_IP=10.0.0.1 NODE_RANK=1 scripts/imagenet.sh
# Run it again after an interruption: training resumes from the last complete checkpoint.
# Under Slurm: scripts/slurm.sbatch (the same steps, srun accelerate launch).
#   TINY=1 scripts/imagenet.sh    # offline in 1–2 minutes: a generated 3-class "ImageNet", small random stand-ins for the
#                                 # teachers, 2 CPU processes (configs/accelerate_cpu_2proc.yaml), the local test Hub
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---- parameters ----------------------------------------------------------------------------------------------------
MODEL=${MODEL:-s12}                                   # s12 s24 s36 m36 m48: recipe riformer-MODEL, PoolFormer-MODEL
IMAGENET=${IMAGENET:-/data/imagenet}                  # train/<wnid>/*.JPEG and val/<wnid>/*.JPEG
WORK=${WORK:-riformer-imagenet}                       # shared by the nodes: teachers, the run, its evaluation
POOLFORMER=${POOLFORMER:-sail/poolformer_$MODEL}      # the imitation teacher (Hub id or folder)
GFNET_URL=${GFNET_URL:-https://cloud.tsinghua.edu.cn/f/954c5af21e824ba6b40c/?dl=1}  # GFNet-H-B, GFNet's README
GFNET_CHECKPOINT=${GFNET_CHECKPOINT:-$WORK/gfnet-h-b.pth}  # downloaded from GFNET_URL when missing
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-$REPO/configs/accelerate_multi_node.yaml}  # 2 machines × 8 GPUs, bf16
NODE_RANK=${NODE_RANK:-0}                             # 0 on the node at MAIN_PROCESS_IP, 1 on the other
MAIN_PROCESS_IP=${MAIN_PROCESS_IP:-10.0.0.1}
MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-29500}
EPOCHS=${EPOCHS:-600}
BATCH=${BATCH:-64}                                    # per GPU
WORKERS=${WORKERS:-8}                                 # data-loader processes per GPU
MIXED_PRECISION=${MIXED_PRECISION:---bf16}
REPO_ID=${REPO_ID:-}                                  # e.g. me/riformer-s12-in1k; empty: no push
BOOTSTRAP=${BOOTSTRAP:-1000}
TINY=${TINY:-0}

tiny_stand_ins() {
  # Offline stand-ins for the downloads (small random models predicting the 3 generated classes), the 2-process CPU
  # launcher config, and the test suite's Hub on 127.0.0.1 unless HF_ENDPOINT is set.
  WORK=${TINY_WORK:-$(mktemp -d -t riformer-imagenet-XXXXXX)}
  IMAGENET=$WORK/imagenet POOLFORMER=$WORK/poolformer-$MODEL GFNET_CHECKPOINT=$WORK/gfnet-h-b.pth
  ACCELERATE_CONFIG=$REPO/configs/accelerate_cpu_2proc.yaml MAIN_PROCESS_IP=127.0.0.1 NODE_RANK=0
  MAIN_PROCESS_PORT=$(python "$REPO/scripts/tiny_inputs.py" free-port)
  EPOCHS=3 BATCH=8 WORKERS=0 MIXED_PRECISION="" BOOTSTRAP=100 REPO_ID=${REPO_ID:-test-user/riformer-tiny-in1k}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  python "$REPO/scripts/tiny_inputs.py" imagenet "$WORK" "$MODEL"
  if [ -z "${HF_ENDPOINT:-}" ]; then
    python "$REPO/scripts/tiny_inputs.py" hub "$WORK/hub-url" & TINY_HUB=$!
    trap 'kill $TINY_HUB' EXIT
    while [ ! -s "$WORK/hub-url" ]; do sleep 0.2; done
    export HF_ENDPOINT=$(cat "$WORK/hub-url")
  fi
  export HF_HUB_DISABLE_XET=1 HF_HUB_OFFLINE=0
}

prepare_teachers() {
  # GFNet-H-B: the official weights → a folder AutoModelForImageClassification loads. The PoolFormer is read from
  # the Hub by each process (sail/poolformer_* are transformers checkpoints; nothing to convert).
  mkdir -p "$WORK"
  if [ ! -f "$WORK/gfnet-h-b/config.json" ]; then
    [ -f "$GFNET_CHECKPOINT" ] || curl -L --fail -o "$GFNET_CHECKPOINT" "$GFNET_URL"
    riformer-convert gfnet --checkpoint "$GFNET_CHECKPOINT" --output_dir "$WORK/gfnet-h-b"
  fi
}

wait_for_teachers() {
  until [ -f "$WORK/gfnet-h-b/config.json" ]; do echo "waiting for node 0 to convert GFNet-H-B in $WORK" >&2; sleep 30; done
}

set_arguments() {
  # What every node launches: accelerate's options (LAUNCH), then riformer-train's (TRAIN). A run folder holding a
  # checkpoint resumes from the last complete one.
  RUN=$WORK/riformer-$MODEL
  LAUNCH=(--config_file "$ACCELERATE_CONFIG" --main_process_ip "$MAIN_PROCESS_IP" --main_process_port "$MAIN_PROCESS_PORT")
  TRAIN=(--recipe "riformer-$MODEL" --data_dir "$IMAGENET" --output_dir "$RUN"
    --teacher_model "$WORK/gfnet-h-b" --imitation_teacher "$POOLFORMER" --init_from_teacher
    --num_train_epochs "$EPOCHS" --per_device_train_batch_size "$BATCH" --dataloader_num_workers "$WORKERS"
    --eval_strategy epoch --save_strategy epoch --save_total_limit 2 --logging_steps 100)
  if [ -n "$MIXED_PRECISION" ]; then TRAIN+=("$MIXED_PRECISION"); fi
  if compgen -G "$RUN/checkpoint-*" > /dev/null; then TRAIN+=(--resume_from_checkpoint last); fi
}

evaluate_and_push() {
  riformer-eval --model_name_or_path "$RUN" --data_dir "$IMAGENET" --split val --bootstrap "$BOOTSTRAP" \
    --output_json "$RUN/imagenet-val.json"
  if [ -n "$REPO_ID" ]; then
    riformer-push --model_dir "$RUN" --repo_id "$REPO_ID" --dataset imagenet-1k --eval_results "$RUN/imagenet-val.json"
  fi
}

main() {
  if [ "$TINY" = 1 ]; then tiny_stand_ins; fi
  if [ "$NODE_RANK" = 0 ]; then prepare_teachers; else wait_for_teachers; fi
  set_arguments
  accelerate launch "${LAUNCH[@]}" --machine_rank "$NODE_RANK" -m riformer_hf.cli train "${TRAIN[@]}"
  if [ "$NODE_RANK" = 0 ]; then evaluate_and_push; fi
}

# Run when executed; when sourced (scripts/slurm.sbatch), only define the parameters and the steps.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main; fi
