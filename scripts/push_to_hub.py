"""Push a RIFormer to the Hugging Face Hub in its re-parameterised (deploy) form, with a model card.

A training-form folder (a Trainer `checkpoint-N`, or `save_pretrained` output) is folded first; a deploy export (e.g.
the `output_dir` of a training run whose push failed) passes through. Honours HF_ENDPOINT and HF_TOKEN.
The logic lives in `riformer_hf.push` (`python -m riformer_hf.push` is the same command).

    python scripts/push_to_hub.py --model_dir runs/riformer-s12/checkpoint-5000 --repo_id me/riformer-s12-distilled \\
        --dataset imagenet-1k --license apache-2.0
"""

from riformer_hf.push import main

if __name__ == "__main__":
    main()
