"""`sknet train`: train a registered model; flags mirror the keys of the YAML/TOML config file."""

from __future__ import annotations

import argparse
import enum
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from sknet.cli.options import add_model_override_args, checked, model_overrides
from sknet.data.loader import MAX_DEFAULT_WORKERS
from sknet.errors import CheckpointError, ConfigError, plural
from sknet.train.config import CHECKS, HELP, RESUME_CHANGEABLE, TrainConfig, read_config_file
from sknet.train.state import read_training_checkpoint
from sknet.weights import previous_path

# `--max-steps null` (or none): the option's value is None, as `--help` says "(or null)"; a sentinel, since
# None on the parsed arguments means "not given".
NULL = object()
NULL_WORDS = ("null", "none")


def _or_null(parse_value):
    def parse(text: str):
        return NULL if text.strip().lower() in NULL_WORDS else parse_value(text)

    parse.__name__ = parse_value.__name__  # argparse names the type in "invalid int value: 'x'"
    parse.check = getattr(parse_value, "check", None)
    return parse


def _field_type(annotation: object) -> type:
    hint = typing.get_type_hints(TrainConfig)[annotation] if isinstance(annotation, str) else annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint  # type: ignore[return-value]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train a model (the main job)", description=__doc__)
    parser.add_argument("--config", help="YAML or TOML file of options; flags given here override it")
    parser.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a run exactly: its folder or its checkpoint.pt; the run's saved configuration is used "
        f"(options that may change: {', '.join(sorted(RESUME_CHANGEABLE))})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run even if --output holds one: the old run is moved to OUTPUT.replaced-<time>/",
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name == "model_options":
            continue
        kind = _field_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        shown = getattr(default, "value", default)
        if f.name == "workers":
            shown = f"the cores available, at most {MAX_DEFAULT_WORKERS}"  # a default_factory: this machine's
        help_text = f"{HELP[f.name]} ({CHECKS[f.name].describe()}; default: {shown})"
        if kind is bool:
            # --x sets True and --no-x False; for a field named no_x, --no-x sets True and --x False.
            negative = "--" + f.name[3:].replace("_", "-") if f.name.startswith("no_") else "--no-" + flag[2:]
            parser.add_argument(flag, dest=f.name, action="store_const", const=True, default=None, help=help_text)
            parser.add_argument(negative, dest=f.name, action="store_const", const=False, help=f"turn {flag} off")
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            parser.add_argument(flag, dest=f.name, choices=[e.value for e in kind], default=None, help=help_text)
        elif CHECKS[f.name].choices:
            parser.add_argument(flag, dest=f.name, choices=CHECKS[f.name].choices, default=None, help=help_text)
        else:
            # Numbers are checked as they are parsed (the option's own check: range, finiteness); the
            # configuration applies the same check to the values of files.
            parse = checked(CHECKS[f.name], flag) if kind in (int, float) else kind
            parse = _or_null(parse) if CHECKS[f.name].optional else parse
            parser.add_argument(flag, dest=f.name, type=parse, default=None, help=help_text)
    add_model_override_args(parser)
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The configuration: the file's values, then the flags'; when resuming, the run's own configuration."""
    values = read_config_file(args.config) if args.config else {}
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None and f.name != "model_options":
            values[f.name] = None if value is NULL else value
    options = model_overrides(args)
    if args.resume:
        return resumed_config(Path(args.resume), values, options)
    source = args.config or "command line"
    values["model_options"] = {**_options_in(values, source), **options}
    return TrainConfig.from_dict(values, source=source)


def _options_in(values: dict, source: str) -> dict:
    """The model_options of `values`, checked to be a mapping of plain values before anything merges them."""
    try:
        return CHECKS["model_options"].apply("model_options", values.get("model_options", {}))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def checkpoint_of(run: Path) -> Path:
    """RUN or RUN/checkpoint.pt → the checkpoint file (checked to exist, unless RUN holds the saved
    configuration of a run that stopped before its first checkpoint: see `has_checkpoint`)."""
    path = run / "checkpoint.pt" if run.is_dir() else run
    if path.is_file() and path.suffix == ".safetensors":  # a run's weights: what --init-weights takes
        raise CheckpointError(
            f"--resume takes a run folder or its checkpoint.pt; {run} holds weights only (no optimizer, schedule or "
            f"position): start a new run from them with --init-weights {run}"
        )
    if not has_checkpoint(path) and not (path.parent / "config.yaml").is_file():
        what = "does not exist" if not run.exists() else "holds neither a checkpoint nor a saved config.yaml"
        raise CheckpointError(f"no checkpoint to resume: {run} {what}")
    return path


def has_checkpoint(path: Path) -> bool:
    return path.is_file() or previous_path(path).is_file()


def resumed_config(run: Path, given: dict, model_options: dict) -> TrainConfig:
    """The run's saved configuration (config.yaml beside the checkpoint, else the one inside it), with the
    given values that may change on resume; any other value that differs is refused, naming it."""
    path = checkpoint_of(run)
    saved_file = path.parent / "config.yaml"
    if saved_file.is_file():
        saved = read_config_file(saved_file)
    else:
        saved = dict(read_training_checkpoint(path).get("config") or {})
    saved["output"] = str(path.parent)  # the run continues where its checkpoint is, wherever it moved
    if model_options:
        given["model_options"] = {
            **_options_in(given if "model_options" in given else saved, "config"),
            **model_options,
        }
    reference = TrainConfig.from_dict(saved, source=str(saved_file)).to_dict()
    requested = TrainConfig.from_dict({**saved, **given}, source="command line").to_dict()
    changed = sorted(k for k in given if k in requested and requested[k] != reference.get(k))
    refused = [k for k in changed if k not in RESUME_CHANGEABLE]
    if refused:
        shown = ", ".join(f"--{k.replace('_', '-')} ({reference.get(k)!r} → {requested[k]!r})" for k in refused)
        raise ConfigError(
            f"cannot change {shown} when resuming {path}: the run was trained with its saved configuration; "
            "start a new run (another --output) to change it"
        )
    return TrainConfig.from_dict({**saved, **given}, source="command line")


def run(args: argparse.Namespace) -> int:
    from sknet.train.distributed import Launch
    from sknet.train.elastic import checkpoint_to_continue, restart_count
    from sknet.train.trainer import train

    config = config_from_args(args)
    overwrite, main_process = args.overwrite, Launch.from_env().rank == 0
    if restart_count() > 0 and not args.resume:  # torchrun restarted the group: continue the run
        found = checkpoint_to_continue(config.output)
        if found is not None:
            args.resume = str(found)
            config = config_from_args(args)
        overwrite = found is None  # nothing saved yet: start again (the partial folder is moved aside)
        if main_process:
            what = f"resuming {found}" if found is not None else "no checkpoint yet, starting again"
            print(f"restart {restart_count()} by torchrun: {what}", flush=True)
    resume = checkpoint_of(Path(args.resume)) if args.resume else None
    if resume is not None and not has_checkpoint(resume):
        # Killed before (or while) writing its first checkpoint: nothing to continue, all to redo. The dead
        # run's files are moved aside (RUN.replaced-<time>/), as --overwrite does: nothing is deleted.
        print(
            f"{resume.parent} holds no checkpoint (its run stopped before the first): starting it again from "
            "step 0 with its saved configuration",
            flush=True,
        )
        resume, overwrite = None, True
    summary = train(config, resume=resume, overwrite=overwrite)
    if "val_acc1" in summary and not summary.get("stopped") and main_process:  # under torchrun, one line for the run
        print(
            f"done: {plural(summary['epochs'], 'epoch')} in {summary['train_seconds']:.0f} s; test top-1 accuracy "
            f"{100 * summary['val_acc1']:.2f}% (error {100 * (1 - summary['val_acc1']):.2f}%), top-5 "
            f"{100 * summary['val_acc5']:.2f}%; outputs in {summary['output']}"
        )
    return 0
