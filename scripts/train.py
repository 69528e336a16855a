"""Train a RIFormer student with RIFormer's recipe (logit distillation, module imitation, teacher initialisation).

    python scripts/train.py --output_dir out --num_train_epochs 5                       # embedded digits, one process
    accelerate launch --config_file configs/accelerate_cpu_2proc.yaml scripts/train.py ...    # 2 CPU processes
    python scripts/train.py --dataset_name imagefolder --data_dir DIR --teacher_model T --distillation_type soft ...

Every flag: `python scripts/train.py --help`. The logic lives in `riformer_hf.training`.
"""

from riformer_hf.training import main

if __name__ == "__main__":
    main()
