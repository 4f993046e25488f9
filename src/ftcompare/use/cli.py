"""The `ftcompare` command: apply a trained run of the study to new text.

    ftcompare predict RUN_DIR --input FILE [--output FILE]
    ftcompare export RUN_DIR --merged OUT
    ftcompare status [RESULTS_DIR] [--watch [SECONDS]]
    ftcompare plan [--directory D] [--configfile F ...] [--device NAME] [--csv]
    ftcompare calibrate [--directory D] [--configfile F ...] [--steps N] [--output FILE]

Kept light: `ftcompare --help` imports neither torch nor transformers; each command
imports what it needs when it runs (ftcompare.use.runs).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

INPUT_FORMATS = ("csv", "tsv", "parquet", "text")
BASE_HELP = (
    "the base model of an adapter run, where the one its adapter_config.json names is gone or unreachable: a "
    "folder, a hub id, or package:NAME (default: the base the study saved)"
)


RUN_DIR_HELP = "a run folder, e.g. results/runs/imdb/roberta-base/lora/seed0"
DEVICE_HELP = "auto (a GPU if there is one, else the CPU), cpu, cuda or cuda:N"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftcompare",
        description="Use what a study trained: label new text with a run, or export its adapter merged into its base.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_predict(commands)
    _add_export(commands)
    _add_status(commands)
    _add_plan(commands)
    _add_calibrate(commands)
    return parser


def _command(commands: Any, name: str, handler: Any, *, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand, run by `handler(args)`; a command on a run takes its folder first."""
    command = commands.add_parser(name, help=help, description=description)
    command.set_defaults(handler=handler)
    if name in ("predict", "export"):
        command.add_argument("run_dir", metavar="RUN_DIR", help=RUN_DIR_HELP)
    return command


def _add_predict(commands: Any) -> None:
    predict = _command(
        commands,
        "predict",
        _predict,
        help="label texts with a trained run",
        description=(
            "Label texts with a trained run, as the study evaluated it: its model rebuilt as trained, its "
            "tokenizer, length-sorted batches within its eval_batch_size, on the GPU if there is one. Writes one "
            "row per input, in input order: row, prediction (the class's name where the data named its classes, "
            "else its number) and prob_<class> for each class."
        ),
    )
    predict.add_argument(
        "--input",
        required=True,
        metavar="FILE",
        help="CSV, TSV or Parquet (by extension) with a text column, or plain text with one review a line; - reads "
        "standard input (plain text unless --format says otherwise)",
    )
    predict.add_argument(
        "--text-column",
        help="the column of a CSV, TSV or Parquet input (default: text; a sentence-pair run: its first text column)",
    )
    predict.add_argument(
        "--pair-column",
        help="a sentence-pair run's second text column (default: the run's, as its train.json records it)",
    )
    predict.add_argument(
        "--format", choices=INPUT_FORMATS, help="the input's format, where its extension does not say (e.g. stdin)"
    )
    predict.add_argument(
        "--output",
        metavar="FILE",
        help="a new .csv or .parquet file to write (default: CSV on standard output); never the input or a file "
        "of the run folder",
    )
    predict.add_argument("--force", action="store_true", help="replace --output if it exists")
    predict.add_argument("--base", metavar="PATH_OR_HUB_ID", help=BASE_HELP)
    predict.add_argument("--device", default="auto", help=DEVICE_HELP)


def _add_export(commands: Any) -> None:
    export = _command(
        commands,
        "export",
        _export,
        help="write a run's adapter merged into its base: a plain transformers model",
        description=(
            "Merge a LoRA, QLoRA or IA3 run's adapter into its base weights and write a plain transformers model "
            "(weights, config with the class names, tokenizer, model card) that "
            'transformers.pipeline("text-classification", model=OUT) loads without PEFT. QLoRA\'s 4-bit base is '
            "dequantised first, so the merged model predicts as the QLoRA run does. Merged on the CPU in fp32."
        ),
    )
    export.add_argument("--merged", required=True, metavar="OUT", help="the new folder to write the merged model to")
    export.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")
    export.add_argument("--base", metavar="PATH_OR_HUB_ID", help=BASE_HELP)


def _add_status(commands: Any) -> None:
    status = _command(
        commands,
        "status",
        _status,
        help="one table of a study's runs and trials: status, progress, ETA, validation and test scores",
        description=(
            "One table of every run and trial of a study, from the files its jobs write (no torch: it runs on a "
            "login node while the jobs run elsewhere): status (running, trained and waiting for its evaluation, "
            "ok, failed with its reason, skipped, died, waiting), step / total, ETA, the best validation score so "
            "far and the test score on the task's primary metric, and a last line with the counts and the study's "
            "ETA. Runs the config no longer plans are listed apart, and not counted."
        ),
    )
    status.add_argument(
        "results",
        nargs="?",
        default="results",
        metavar="RESULTS_DIR",
        help="the study's results folder, or the folder Snakemake ran it in (default: results)",
    )
    status.add_argument(
        "--watch",
        nargs="?",
        const=10.0,
        type=_watch_seconds,
        metavar="SECONDS",
        help="refresh every SECONDS (default 10, at least 1)",
    )


def _add_plan(commands: Any) -> None:
    plan = _command(
        commands,
        "plan",
        _plan,
        help="what a study will cost: jobs, tokens and GPU-hours, before any job runs (no torch)",
        description=(
            "Each task x model x strategy's jobs (tuning trials, final runs, evaluations), the tokens they process "
            "and their estimated hours on a device, and the study's total with the tuning share. Reads the config "
            "as snakemake does with the same --directory and --configfile. Throughput: the study's finished runs, "
            "else its calibration (ftcompare calibrate), else BENCHMARKS.md's H200 figures; each line says which."
        ),
    )
    _study_arguments(plan)
    plan.add_argument(
        "--device",
        metavar="NAME",
        help="the device to estimate for (default: cost.device, else the calibration's, else NVIDIA H200)",
    )
    plan.add_argument("--calibration", metavar="FILE", help="a calibration file (default: results/calibration.json)")
    plan.add_argument("--csv", action="store_true", help="CSV, one line per task x model x strategy")


def _add_calibrate(commands: Any) -> None:
    calibrate = _command(
        commands,
        "calibrate",
        _calibrate,
        help="time a few training steps of each model x method family on this device, for `ftcompare plan`",
        description=(
            "Times a few optimizer steps (and evaluation batches) of each model x method family of the study on this "
            "device, with the study's max_length and token budget, and stores tokens/s with the device's name."
        ),
    )
    _study_arguments(calibrate)
    calibrate.add_argument("--steps", type=int, default=5, help="timed steps per model x family (default 5)")
    calibrate.add_argument("--output", metavar="FILE", help="default: results/calibration.json of the study")
    calibrate.add_argument("--device", default="auto", help=DEVICE_HELP)


def _watch_seconds(text: str) -> float:
    from ftcompare.use.status import watch_seconds

    try:
        return watch_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _study_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--directory", "-d", default=".", metavar="D", help="the study's folder, as snakemake's")
    command.add_argument("--configfile", nargs="+", default=[], metavar="F", help="config overlays, as snakemake's")


def _quiet_libraries() -> None:
    # transformers reports, for an adapter's base, the classifier it does not have (the
    # adapter brings the trained one), and draws progress bars: noise beside our output.
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def _predict(args: argparse.Namespace) -> int:
    from ftcompare.use import runs as trained

    run = trained.open_run(args.run_dir)
    # A bad --output or --base fails before any work.
    trained.check_output(args.output, run=run, input_source=args.input, force=args.force)
    trained.base_model_source(run, args.base)
    trained.check_weights(run)
    device = trained.parse_device(args.device)
    columns = run.text_columns
    if run.pair:  # two columns, named as in the run's data unless told
        texts, pairs = trained.read_pairs(
            args.input,
            fmt=args.format,
            column=args.text_column or columns["text"],
            pair_column=args.pair_column or columns["text_pair"],
        )
    elif args.pair_column is not None:
        raise trained.UsageError(
            f"--pair-column {args.pair_column!r}: run {str(run.run_dir)!r} classifies one text a row "
            f"(column {columns['text']!r}); leave --pair-column out"
        )
    else:
        texts, pairs = trained.read_texts(args.input, fmt=args.format, column=args.text_column), None
    _quiet_libraries()
    frame = trained.predict(run, texts, pairs=pairs, device=device, base=args.base)
    trained.write_predictions(frame, args.output)
    if args.output is not None:
        print(f"wrote {len(frame)} predictions to {args.output}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from ftcompare.use import runs as trained

    run = trained.open_run(args.run_dir)
    _quiet_libraries()
    out = trained.export_merged(run, args.merged, force=args.force, base=args.base)
    print(f"wrote the merged model to {out}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    from ftcompare.use import status

    try:
        return status.show(args.results, watch=args.watch)
    except FileNotFoundError as exc:
        print(f"ftcompare status: error: {exc}", file=sys.stderr)
        return 2


def _plan(args: argparse.Namespace) -> int:
    from ftcompare.plan import estimate as planning

    sys.stdout.write(
        planning.plan(
            args.directory, args.configfile, device=args.device, calibration=args.calibration, as_csv=args.csv
        )
    )
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from ftcompare.use import calibration

    out = calibration.calibrate(
        args.directory, args.configfile, steps=args.steps, output=args.output, device=args.device
    )
    print(f"wrote {out}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("status", "plan"):  # before the imports below, which bring torch: no need of it
        from ftcompare.contract import ConfigError

        try:
            return args.handler(args)
        except ConfigError as exc:
            print(f"ftcompare {args.command}: error: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from ftcompare.contract import ConfigError, ModelSourceError, UsageError
    from ftcompare.data import DataError

    try:
        return args.handler(args)
    except (UsageError, DataError, ModelSourceError, ConfigError) as exc:
        print(f"ftcompare {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped early (`| head -1`): stop quietly, as other commands do. Standard
        # output goes to /dev/null so that Python's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
