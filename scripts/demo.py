"""The embedded default (no arguments, no network, a few minutes on 2 CPU cores): train a small PoolFormer teacher on
the digits bundled with scikit-learn, then a RIFormer student four ways (labels only; soft distillation; + module
imitation; + teacher initialisation), re-parameterise each and print their held-out top-1 beside the paper's ablation.

    python scripts/demo.py [--seed 0] [--teacher_epochs 30] [--student_epochs 16] [--threads 1]

The logic lives in `riformer_hf.demo`.
"""

from riformer_hf.demo import main

if __name__ == "__main__":
    main()
