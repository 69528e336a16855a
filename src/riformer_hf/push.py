"""Command line of `push_reparameterized`: push a RIFormer to the Hub in its re-parameterised (deploy) form.

A training-form folder (a Trainer `checkpoint-N`, or `save_pretrained` output) is folded first; a deploy export (e.g.
the `output_dir` of a training run whose push failed) passes through. Honours HF_ENDPOINT and HF_TOKEN.

    python -m riformer_hf.push --model_dir runs/riformer-s12/checkpoint-5000 --repo_id me/riformer-s12-distilled \\
        --dataset imagenet-1k --license apache-2.0

`scripts/push_to_hub.py` is the same command; failed pushes print this one, which works from any install.
"""

import argparse

from .hub import HubPushError, push_reparameterized


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="folder with config.json + model.safetensors (either form)")
    parser.add_argument("--repo_id", required=True, help="Hub repo, `name` or `namespace/name`; created if missing")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    parser.add_argument("--token", default=None, help="write token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--push_training_weights", action="store_true",
                        help="also push the training form under training/ (needs a training-form --model_dir)")
    parser.add_argument("--save_dir", default=None, help="also keep the deploy export in this folder")
    parser.add_argument("--dataset", action="append", dest="datasets", help="training dataset Hub id (repeatable)")
    parser.add_argument("--base_model", action="append", help="teacher / base model Hub id (repeatable)")
    parser.add_argument("--license", default=None)
    args = parser.parse_args(argv)

    try:
        commit = push_reparameterized(
            args.model_dir, args.repo_id, token=args.token, private=args.private, revision=args.revision,
            commit_message=args.commit_message, push_training_weights=args.push_training_weights,
            save_dir=args.save_dir, datasets=args.datasets, base_model=args.base_model, license=args.license,
        )
    except HubPushError as error:
        raise SystemExit(str(error)) from None
    print(f"Pushed the re-parameterised model to {commit.repo_url} ({commit.oid}).")


if __name__ == "__main__":
    main()
