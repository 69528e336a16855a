"""`riformer-train`: validate everything that needs no data, build, train (or resume), evaluate, save the metrics,
the state and the export, push. The model trained is a RIFormer student (exported in deploy form) or any image
classifier, e.g. a PoolFormer or GFNet teacher fine-tuned on your labels (exported as it is).

Nothing already on disk is lost: the arguments, the output folder (an earlier run, write access, its run lock, free
space) and the models named are checked before any data is read; `--overwrite_output_dir` keeps the earlier run aside
until the new one has saved; a failed push leaves every local file written (see `cli`).

    riformer-train --output_dir run --max_steps 100          # the embedded digits
    riformer-train config.json                               # the same fields as one JSON object
    accelerate launch --config_file configs/accelerate_cpu_2proc.yaml -m riformer_hf.training.run ...
"""

import contextlib
import logging
import sys

import datasets
import torch
import transformers
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from .arguments import parse_args
from .builders import build_trainer
from .checks import (
    check_free_disk,
    check_hub_repo,
    check_models,
    check_output_dir,
    check_resume_matches,
    check_values,
    output_folder,
    resolve_resume,
)
from .interrupt import record_training_run

logger = hf_logging.get_logger(__name__)


def setup_logging(training_args) -> None:
    """transformers' example-script logging: one format on stdout, the process's log level for transformers and
    datasets (`--log_level`, `--log_level_replica`), no progress bars for loads and saves. This package's own messages
    (the schedule, a skipped image, an incomplete checkpoint) show unless `--log_level` asks for less."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    level = training_args.get_process_log_level()
    for verbosity in (datasets.utils.logging.set_verbosity, hf_logging.set_verbosity):
        verbosity(level)
    explicit = training_args.log_level != "passive" or not training_args.should_log
    logging.getLogger("riformer_hf").setLevel(level if explicit else logging.INFO)
    hf_logging.disable_progress_bar()  # "Writing model shards" / "Loading weights" at every save and load
    datasets.disable_progress_bars()  # "Generating train split" at every load of an image folder


def main(argv: list[str] | None = None):
    """Run `riformer-train` on `argv`; returns the trainer. `--do_eval` without `--do_train` evaluates
    `--model_name_or_path` (either form) and writes eval_results.json. A failed push raises `HubPushError` after
    everything local is written. A training run holds its output folder's run lock from the checks to the end."""
    argv = list(sys.argv[1:] if argv is None else argv)
    data_args, model_args, training_args, run_args = parse_args(argv)
    if run_args.threads:
        torch.set_num_threads(run_args.threads)
    setup_logging(training_args)
    check_values(data_args, model_args, training_args, run_args)
    check_models(model_args, training_args, data_args)
    check_hub_repo(training_args)
    lock = check_output_dir(training_args, run_args, model_args)
    with lock or contextlib.nullcontext():
        return train_evaluate_save(argv, data_args, model_args, training_args, run_args, lock)


def train_evaluate_save(argv, data_args, model_args, training_args, run_args, lock=None):
    """Everything after the checks. `--overwrite_output_dir` (training afresh) moves the earlier run aside when
    training starts and deletes it at the new run's first save; stopped before that, the earlier run is put back."""
    resume = resolve_resume(training_args) if training_args.do_train else None
    logger.info(f"transformers {transformers.__version__}, torch {torch.__version__}; {training_args.device}, "
                f"{training_args.world_size} process(es)")
    trainer = build_trainer(data_args, model_args, training_args)
    if training_args.do_train:
        if resume is not None:
            check_resume_matches(resume, trainer.model)
        check_free_disk(trainer.model, training_args)
        record_training_run(training_args.output_dir, argv, training_args.process_index, training_args.world_size)
    afresh = run_args.overwrite_output_dir and resume is None and lock is not None and lock.held
    replacing = output_folder(training_args, run_args).set_aside_earlier() if afresh else contextlib.nullcontext()
    with replacing as earlier:
        if earlier is not None:
            trainer.add_callback(DiscardEarlierRun(earlier))
        if training_args.do_train:
            result = trainer.train(resume_from_checkpoint=resume)
            trainer.log_metrics("train", result.metrics)
            trainer.save_metrics("train", result.metrics)
        if training_args.do_eval:
            metrics = trainer.evaluate()  # before the export, so that its model card has the final evaluation
            trainer.log_metrics("eval", metrics)
            trainer.save_metrics("eval", metrics)
        if training_args.do_train:
            trainer.save_state()
    if training_args.do_train:
        if training_args.push_to_hub:
            trainer.push_to_hub()  # writes the export first; raises HubPushError with the retry command
        else:
            trainer.save_model()
    return trainer


class DiscardEarlierRun(TrainerCallback):
    """The earlier run that `--overwrite_output_dir` moved aside is deleted once this run has saved a checkpoint."""

    def __init__(self, earlier):
        self.earlier = earlier

    def on_save(self, args, state, control, **kwargs):
        self.earlier.discard()


if __name__ == "__main__":
    from ..cli import run_command

    sys.exit(run_command("train"))
