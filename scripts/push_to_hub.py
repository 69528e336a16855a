"""Push a RIFormer to the Hugging Face Hub in its re-parameterised (deploy) form, with a model card.

    python scripts/push_to_hub.py --model_dir runs/riformer-s12/checkpoint-5000 --repo_id me/riformer-s12-distilled \\
        --dataset imagenet-1k --license apache-2.0

Every flag: `python scripts/push_to_hub.py --help`. The logic lives in `riformer_hf.push`
(`python -m riformer_hf.push` is the same command and works from any install).
"""

from riformer_hf.push import main

if __name__ == "__main__":
    main()
