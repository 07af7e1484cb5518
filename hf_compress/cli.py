"""The command line: ``hf-compress train RECIPE --output_dir DIR [--block.key VALUE ...]``, ``export``, ``bench``,
``push``, ``test-technique``, ``recipes``.

Also runs as ``python -m hf_compress`` and under ``accelerate launch -m hf_compress train ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import transformers

from .checkpoints import RECIPE_FILE
from .compat import OptimumNotInstalledError
from .export import MetricDropError
from .export.to_onnx import ONNX_EXPORTERS
from .int8_routes import INT8_ROUTES
from .pipeline import check_recipe_models, default_training_arguments, has_student, results_table, run_recipe
from .plugins import import_modules
from .recipe import Recipe, RecipeError
from .recipes import copy_recipe, list_recipes, load_recipe
from .stopping import STOPPED_EXIT_CODE, TrainingStopped
from .tasks import load_task_data

logger = logging.getLogger("hf_compress")

EPILOG = """Any recipe key can be overridden with a dotted flag, e.g.
  --training.learning_rate 5e-5  --training.num_train_epochs 1  --data.max_train_samples 500"""
EXPORT_EPILOG = """The recipe's export block is the default; flags and dotted overrides of recipe keys change it:
  --export.int8 dynamic  --export.fuse false
  --data.train_file train.json  --data.validation_file dev.json"""


def parse_overrides(extra: Sequence[str]) -> dict[str, str]:
    """``["--a.b", "1", "--c.d=x"]`` -> ``{"a.b": "1", "c.d": "x"}``; anything else is an error."""
    overrides, items = {}, list(extra)
    while items:
        flag = items.pop(0)
        if not flag.startswith("--") or "." not in flag:
            raise SystemExit(
                f"hf-compress: unrecognized argument {flag!r} (recipe overrides look like --block.key VALUE)"
            )
        key, has_value, value = flag[2:].partition("=")
        if not has_value:
            if not items or items[0].startswith("--"):
                raise SystemExit(f"hf-compress: {flag} needs a value")
            value = items.pop(0)
        overrides[key] = value
    return overrides


#: Errors that mean bad input (a recipe value, a file, a folder, a checkpoint): one line, exit status 2.
BAD_INPUT = (ValueError, OSError, OptimumNotInstalledError)


def _bad_input(error: Exception) -> int:
    logger.debug("bad input", exc_info=error)
    print(f"hf-compress: {error}", file=sys.stderr)
    return 2


def _add_import_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (repeatable): techniques defined outside hf-compress and not installed as "
        "plugins (a recipe can also list them under 'imports:')",
    )


def _import_modules(args: argparse.Namespace) -> int | None:
    """Import the ``--import`` modules; on failure, the one-line error's exit status."""
    try:
        import_modules(args.imports, "--import")
    except RecipeError as error:
        print(f"hf-compress: --import {error.value}: {error.allowed}", file=sys.stderr)
        return 2
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-compress", description="Compress transformers while fine-tuning.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="run a recipe: (teacher), student, results table",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "recipe", help="a YAML recipe file, or the name of a shipped recipe (a file wins; 'hf-compress recipes')"
    )
    train.add_argument("--output_dir", required=True, help="where checkpoints, models and results go")
    train.add_argument(
        "--resume_from_checkpoint",
        nargs="?",
        const=True,
        default=None,
        help="resume from the latest checkpoint in output_dir, or from the given checkpoint",
    )
    train.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="train into an output_dir that holds a previous run (files are written over, none deleted)",
    )
    train.add_argument(
        "--check", action="store_true", help="validate the recipe, its local model folders and data files; print it"
    )
    _add_import_option(train)

    export = commands.add_parser(
        "export",
        help="export a trained model to ONNX fp32 or int8, evaluated",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument(
        "model_dir", help="a model folder (the output of 'hf-compress train', or any fine-tuned model)"
    )
    export.add_argument("--output_dir", help="where the ONNX folder goes (default: MODEL_DIR/onnx[-int8-ROUTE])")
    export.add_argument(
        "--int8", choices=["none", *INT8_ROUTES], help="an int8 route, or none (default: the recipe's export.int8)"
    )
    export.add_argument(
        "--recipe",
        help="the export block, data to evaluate/calibrate on, the technique blocks (default: MODEL_DIR/recipe.yaml)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an earlier export in the output folder")
    export.add_argument(
        "--exporter",
        choices=["auto", *ONNX_EXPORTERS],
        help="the ONNX exporter (default: the recipe's export.exporter, auto: Optimum where installed, else torch)",
    )
    export.add_argument(
        "--max_metric_drop",
        type=float,
        help="exit with status 3 (keeping the files) when the exported model's metric is below PyTorch's by more "
        "than this (metric units: 0.005 = half an F1 point; default: the recipe's export.max_metric_drop)",
    )
    _add_import_option(export)

    bench = commands.add_parser(
        "bench", help="measure models (and Optimum's own versions of their teacher): metric, MB, latency, Pareto plot"
    )
    bench.add_argument("candidates", nargs="+", help="model or ONNX export folders, as PATH or NAME=PATH")
    bench.add_argument("--output_dir", required=True, help="where bench.{json,md,png} (and the references) go")
    bench.add_argument("--teacher", help="a fine-tuned fp32 model: adds Optimum's fp32, dynamic int8, O2 + dynamic")
    bench.add_argument("--task", default="ner", help="ner, token-classification or text-classification")
    bench.add_argument("--dataset", help="a hub dataset with a validation split (default: conll2003 for ner)")
    bench.add_argument("--dataset_config", help="the hub dataset's configuration (e.g. sst2 of glue)")
    bench.add_argument("--train_file", help="local training file (its labels define the label set)")
    bench.add_argument("--validation_file", help="the local eval file")
    bench.add_argument("--max_eval_samples", type=int, help="evaluate on the first N examples")
    bench.add_argument(
        "--decoding",
        choices=("argmax", "constrained"),
        default="argmax",
        help="NER: how every row's tags are read (constrained: Viterbi over legal IOB2 transitions)",
    )
    bench.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    bench.add_argument("--latency_sentences", type=int, default=300, help="eval examples timed one by one")
    _add_import_option(bench)

    push = commands.add_parser("push", help="upload an export folder to the Hugging Face Hub")
    push.add_argument("folder", help="an export folder (model.onnx, config, tokenizer, model card)")
    push.add_argument("--repo_id", required=True, help="e.g. my-user/bert-ner-int8")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", help="a Hub token (default: the one saved by 'hf auth login')")
    push.add_argument("--commit_message")

    contract = commands.add_parser(
        "test-technique",
        help="run hf-compress's contract tests on a technique (e.g. a plugin's); needs pytest (the dev extra)",
    )
    contract.add_argument("name", nargs="+", help="the technique's recipe key (e.g. layerdrop)")
    _add_import_option(contract)
    _add_recipes_parser(commands)
    return parser


def train_command(args: argparse.Namespace, extra: Sequence[str]) -> int:
    if (status := _import_modules(args)) is not None:
        return status
    try:
        recipe = load_recipe(args.recipe, overrides=parse_overrides(extra))
    except BAD_INPUT as error:
        return _bad_input(error)
    recipe.imports = list(dict.fromkeys([*recipe.imports, *args.imports]))  # saved with the recipe
    if args.check:
        try:
            check_recipe_models(recipe)
            if recipe.data is not None:
                load_task_data(recipe.data, local_only=True)
        except BAD_INPUT as error:
            return _bad_input(error)
        print(recipe.to_yaml())
        return 0
    try:  # transformers' own checks of the training arguments
        training_args = default_training_arguments(args.output_dir, recipe.training)
    except BAD_INPUT as error:
        return _bad_input(error)
    if training_args.should_log:
        logger.setLevel(logging.INFO)
    try:
        results = run_recipe(
            recipe,
            training_args,
            resume_from_checkpoint=args.resume_from_checkpoint,
            overwrite_output_dir=args.overwrite_output_dir,
            stop_on_signal=True,
        )
    except TrainingStopped as error:
        print(f"hf-compress: {error}", file=sys.stderr)
        return STOPPED_EXIT_CODE
    except KeyboardInterrupt:
        print("hf-compress: interrupted; the complete checkpoints in --output_dir are kept", file=sys.stderr)
        return 130
    except MetricDropError as error:
        print(f"hf-compress: the export failed its quality gate: {error}", file=sys.stderr)
        return 3
    except BAD_INPUT as error:
        return _bad_input(error)
    if training_args.should_save:
        print("\n" + results_table(results))
        if has_student(recipe):
            print(f"\nStudent saved in {training_args.output_dir} (results.json, results.md beside it).")
        else:
            teacher = Path(training_args.output_dir) / "teacher"
            print(f"\nTeacher saved in {teacher} (results.json, results.md in {training_args.output_dir}).")
    return 0


def export_command(args: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    from .export import export, report_markdown
    from .recipe import apply_overrides

    if (status := _import_modules(args)) is not None:
        return status
    try:
        overrides = parse_overrides(extra)
        saved = Path(args.model_dir) / RECIPE_FILE
        path = args.recipe or (saved if saved.is_file() else None)
        recipe = Recipe.from_yaml(path, overrides) if path else Recipe.from_dict(apply_overrides({}, overrides))
        report = export(
            args.model_dir,
            args.output_dir,
            recipe=recipe,
            int8=args.int8,
            max_metric_drop=args.max_metric_drop,
            exporter=args.exporter,
            overwrite=args.overwrite,
        )
    except MetricDropError as error:
        print("\n" + report_markdown(error.report))
        print(f"hf-compress: the export failed its quality gate: {error}", file=sys.stderr)
        return 3
    except BAD_INPUT as error:
        return _bad_input(error)
    print("\n" + report_markdown(report))
    print(f"Exported to {report['output_dir']} (export_report.json, README.md beside it).")
    return 0


def bench_command(args: argparse.Namespace) -> int:
    from .bench import bench_markdown, candidates_from_arguments, run_bench
    from .configs import DataConfig

    if (status := _import_modules(args)) is not None:
        return status
    try:
        files = {"train_file": args.train_file, "validation_file": args.validation_file}
        hub = {} if args.train_file else {"dataset": args.dataset or ("conll2003" if args.task == "ner" else None)}
        if args.dataset_config:
            hub["dataset_config"] = args.dataset_config
        data = DataConfig(task=args.task, decoding=args.decoding, **({k: v for k, v in files.items() if v} or hub))
        if args.max_eval_samples:
            data.max_eval_samples = args.max_eval_samples
        report = run_bench(
            candidates_from_arguments(args.candidates),
            data,
            args.output_dir,
            teacher=args.teacher,
            threads=args.threads,
            latency_sentences=args.latency_sentences,
        )
    except BAD_INPUT as error:
        return _bad_input(error)
    print(bench_markdown(report))
    return 0


def push_command(args: argparse.Namespace) -> int:
    from .export.hub import push_to_hub

    try:
        url = push_to_hub(
            args.folder, args.repo_id, token=args.token, private=args.private, commit_message=args.commit_message
        )
    except BAD_INPUT as error:
        return _bad_input(error)
    print(f"Uploaded {args.folder} to {url}")
    return 0


def test_technique_command(args: argparse.Namespace) -> int:
    """The contract tests on the named techniques (:func:`hf_compress.testing.run_contract`): pytest's status."""
    from .testing import run_contract

    if (status := _import_modules(args)) is not None:
        return status
    try:
        return run_contract(args.name)
    except (ValueError, ImportError) as error:  # a technique not registered; pytest not installed
        return _bad_input(error)


# ---------------------------------------------------------------------------------------- shipped recipes
def _add_recipes_parser(commands: argparse._SubParsersAction) -> None:
    recipes = commands.add_parser(
        "recipes",
        help="list the recipes shipped with hf-compress, or copy one to edit ('hf-compress train NAME' runs one)",
    )
    actions = recipes.add_subparsers(dest="recipes_command")
    copy = actions.add_parser("copy", help="write a shipped recipe to a file to edit")
    copy.add_argument("name", help="a shipped recipe's name (see 'hf-compress recipes')")
    copy.add_argument("destination", nargs="?", default=".", help="a folder or a file name (default: .)")
    copy.add_argument("--overwrite", action="store_true", help="replace an existing file")


def recipes_command(args: argparse.Namespace) -> int:
    """``hf-compress recipes``: each shipped recipe's name and description; ``recipes copy NAME [DEST]``."""
    try:
        if args.recipes_command == "copy":
            target = copy_recipe(args.name, args.destination, overwrite=args.overwrite)
            print(f"Wrote {target}: edit it, then run 'hf-compress train {target} --output_dir DIR'.")
            return 0
        recipes = list_recipes()
    except BAD_INPUT as error:
        return _bad_input(error)
    width = max((len(recipe.name) for recipe in recipes), default=0)
    for recipe in recipes:
        print(f"{recipe.name:<{width}}  {recipe.description}")
    print("\nRun one: 'hf-compress train NAME --output_dir DIR'; copy one to edit: 'hf-compress recipes copy NAME'.")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    transformers.logging.set_verbosity_warning()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":
        raise SystemExit(train_command(args, extra))
    if args.command == "export":
        raise SystemExit(export_command(args, extra))
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "push":
        raise SystemExit(push_command(args))
    if args.command == "bench":
        raise SystemExit(bench_command(args))
    if args.command == "test-technique":
        raise SystemExit(test_technique_command(args))
    if args.command == "recipes":
        raise SystemExit(recipes_command(args))
    parser.error(f"unknown command {args.command!r}")


if __name__ == "__main__":
    main()
