"""The ``densitylab`` command line: list, train, eval, sample, demo, bench."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from densitylab.errors import DensitylabError, user_message


def parse_model_options(pairs: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` (the ``--model-opt`` flags) as a dict; values parsed as YAML."""
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise DensitylabError(f"--model-opt takes KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return options


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, where to look) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"densitylab: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's help ends with its default, except where there is none to show (no value,
    an off switch, or a help text that already names it); descriptions and epilogs keep their
    line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text or action.default in (None, False, [], argparse.SUPPRESS)
                or action.option_strings == [] and action.nargs in ("?", "*")):
            return text
        return text + " (default: %(default)s)"


def _run_default(name: str) -> str:
    """`` (default: X)`` for a train flag, X taken from :class:`densitylab.config.RunConfig`."""
    from densitylab.config import RunConfig

    return f" (default: {RunConfig.__dataclass_fields__[name].default})"


def _experiment_epilog() -> str:
    import textwrap

    from densitylab import catalog

    lines = ["experiments:"]
    for name, claim in catalog.experiments().items():
        lines.append(f"  {name}")
        lines += textwrap.wrap(claim, 90, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from densitylab import __version__

    parser = OneLineParser(
        prog="densitylab",
        description="Train, evaluate and sample autoregressive models and normalizing flows, "
        "scored in exact bits/dim.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error "
                        "(also DENSITYLAB_DEBUG=1); accepted anywhere on the command line")
    parser.add_argument("--version", action="version", version=f"densitylab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser,
                                metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=kwargs.pop("description", help),
                              formatter_class=HelpFormatter, **kwargs)

    listing = command("list", "every model, dataset and experiment, one line each; "
                      "'list MODEL': the model's options")
    listing.add_argument("model", nargs="?", help="a model name: print its options (type, default, "
                         "meaning), set with --model-opt KEY=VALUE")

    train = command("train", "train a model into a run directory",
                    epilog="Flags override the --config file, which overrides the defaults shown.\n"
                    "A model's own options: 'densitylab list MODEL'.")
    train.add_argument("model", nargs="?", help="model name (see 'densitylab list'; "
                       "not with --resume)")
    train.add_argument("--config", help="RUN.yaml with settings (a run's config.yaml works); "
                       "flags override it")
    train.add_argument("--data", help="dataset name, .npy/.npz file or image folder"
                       + _run_default("data"))
    train.add_argument("--data-dir", help="where MNIST/Fashion-MNIST IDX files live (default: "
                       "$DENSITYLAB_DATA, the system's dataset folder, then ~/.cache/densitylab)")
    train.add_argument("--context-columns", help="tables: columns (0-based indices or CSV header "
                       "names, comma-separated) that condition the others: p(x | context)")
    train.add_argument("--n-bits", type=int, help="quantize to 2**N levels, 1 = binarize "
                       "(default: the dataset's own levels)")
    train.add_argument("--conditional", action="store_true", default=None,
                       help="class-conditional model: the dataset's labels feed the model")
    train.add_argument("--epochs", type=float, help="number of passes over the training set "
                       "(give --epochs, --time-budget or both; training stops at the first)")
    train.add_argument("--time-budget", metavar="DURATION",
                       help="stop after this much training time, e.g. 90s, 10m, 1h; 'none' clears "
                       "a budget set by --config (evaluation and sampling come after it)")
    train.add_argument("--batch-size", type=int, help="images per optimizer step"
                       + _run_default("batch_size"))
    train.add_argument("--lr", type=float, help="peak Adam learning rate, reached after a warm-up "
                       "of at most 5%% of the run (default: the model's, see 'densitylab list MODEL')")
    train.add_argument("--ema", type=float, metavar="DECAY",
                       help="evaluate, sample and save an exponential moving average of the weights "
                       "with this decay, e.g. 0.999 (0: the last weights)" + _run_default("ema"))
    train.add_argument("--device", help="auto, cpu, cuda or cuda:N" + _run_default("device"))
    train.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                       help="fp32, or autocast the networks to bf16 / fp16 (fp16: CUDA "
                       "only); log-likelihoods and the loss stay fp32" + _run_default("precision"))
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the training loss (first steps slower while it compiles)"
                       + _run_default("compile"))
    train.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="keep images and convolution weights in the NHWC memory layout (on a "
                       "CPU often faster convolutions; the same model)" + _run_default("channels_last"))
    train.add_argument("--seed", type=int, help="seeds initialisation, data order and noise"
                       + _run_default("seed"))
    train.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    train.add_argument("--eval-every", type=int, help="steps between evaluations on the first "
                       "test images" + _run_default("eval_every"))
    train.add_argument("--checkpoint-every", type=int, help="steps between checkpoints"
                       + _run_default("checkpoint_every"))
    train.add_argument("--sample-count", type=int, help="samples drawn into samples.png at the end, "
                       "0: none" + _run_default("sample_count"))
    train.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                       help="a model option, e.g. hidden_channels=32 (repeatable; the options and "
                       "their defaults: 'densitylab list MODEL')")
    train.add_argument("--head", choices=("softmax", "logistic-mixture"),
                       help="output distribution of PixelCNN / Gated PixelCNN (= --model-opt head=...; "
                       "default: softmax)")
    train.add_argument("--coords", action="store_true",
                       help="feed each position's (row, column) to rnn / wavenet (= --model-opt coords=true)")
    train.add_argument("--dequantization", choices=("uniform", "variational"),
                       help="how a flow dequantizes discrete data: uniform noise or a learned q(u|x), "
                       "Flow++ (= --model-opt dequantization=...; default: uniform)")
    train.add_argument("--out", metavar="RUN_DIR", help="run directory (required, except with --resume)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint; "
                       "only --epochs, --time-budget, --threads, --device, --precision and "
                       "--compile may change")
    train.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress display: a bar on a terminal, elsewhere a line every "
                       "log_every steps (at most one per 10 s)")

    ev = command("eval", "test bits/dim of a trained run")
    ev.add_argument("run_dir", help="a run directory (or a model/checkpoint .safetensors file)")
    ev.add_argument("--data", help="evaluate on another dataset with the same shape and levels "
                    "(default: the run's)")
    ev.add_argument("--data-dir", help="where MNIST/Fashion-MNIST IDX files live (default: the run's)")
    ev.add_argument("--split", choices=("test", "train"), default="test", help="which split to score")
    ev.add_argument("--iw", type=int, default=1, metavar="S",
                    help="flows on discrete data: importance-weighted bound with S dequantization "
                    "samples (exact models need none)")
    ev.add_argument("--max-images", type=int, help="evaluate on the first N images only (N >= 1; "
                    "default: every image of the split)")
    ev.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    ev.add_argument("--seed", type=int, default=0, help="seeds the dequantization noise")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    sample = command("sample", "write a grid of samples from a trained run")
    sample.add_argument("run_dir", help="a run directory (or a model/checkpoint .safetensors file)")
    sample.add_argument("-n", type=int, default=64, help="number of samples")
    sample.add_argument("-o", "--output", default=None, help="PNG path (default: RUN_DIR/grid.png)")
    sample.add_argument("--temperature", type=float, default=1.0,
                        help="scales the logits' (or the prior's) spread; 0: the most likely value")
    sample.add_argument("--label", type=int, help="class-conditional models: sample this class "
                        "(default: a grid with one labelled row per class)")
    sample.add_argument("--seed", type=int, default=0, help="the same seed gives the same images")
    sample.add_argument("--context", help="conditional flows: the context to sample at, "
                        "comma-separated numbers")
    sample.add_argument("--method", choices=["cached", "naive"],
                        help="autoregressive models, MAF and IAF: reuse earlier steps' activations "
                        "(cached, the default where the model has it) or run the whole network per "
                        "step (naive); the same --seed gives the same images")
    sample.add_argument("--float64", action="store_true",
                        help="sample in float64: cached and naive then agree even on draws that "
                        "float32 rounding could tip (rare; slower)")
    sample.add_argument("--no-progress", action="store_true", help="no progress bar")
    sample.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")

    demo = command("demo", "train a small PixelCNN and RealNVP on real MNIST digits")
    demo.add_argument("--out", default="demo_runs", help="directory for the two runs")
    demo.add_argument("--time-budget", default="100s", help="training time per model")

    experiment = command("experiment", "reproduce a claim of the course notes: "
                         "results.json and figures in --out (NAME all: every experiment)",
                         epilog=_experiment_epilog())
    experiment.add_argument("name", help="one of the experiments below, or all")
    experiment.add_argument("--out", required=True, help="directory for results.json and figures "
                            "(all: one sub-directory per experiment)")
    experiment.add_argument("--budget", choices=("tiny", "small", "full"), default="small",
                            help="tiny: seconds (a smoke test, never 'reproduced'); small: a 2-core "
                            "CPU, 3 seeds, all in under 90 minutes; full: a GPU, 5 seeds")
    experiment.add_argument("--seed", type=int, default=0, help="the first seed; the others follow it")
    experiment.add_argument("--jobs", type=int, help="all: experiments run side by side, one torch "
                            "thread per core each; the timed ones (af-vs-iaf, leaderboard) run "
                            "alone first (default: 2 on a machine with 2 or more cores)")

    report = command("report", "render experiment results and training runs into one "
                     "self-contained HTML page")
    report.add_argument("dirs", nargs="+", help="experiment output directories and/or run "
                        "directories (or directories of them)")
    report.add_argument("-o", "--output", default="report.html", help="HTML file to write (a name "
                        "ending in .md writes a Markdown summary of the experiments instead)")

    bench = command("bench", "fixed-budget benchmark: train N minutes, report JSON")
    bench.add_argument("model", help="model name (see 'densitylab list')")
    bench.add_argument("--data", default="fashion-mnist", help="dataset name")
    bench.add_argument("--data-dir", help="where MNIST/Fashion-MNIST IDX files live")
    bench.add_argument("--n-bits", type=int, help="quantize to 2**N levels, 1 = binarize "
                       "(default: the dataset's own levels)")
    bench.add_argument("--minutes", type=float, default=8.0, help="training time")
    bench.add_argument("--batch-size", type=int, default=64, help="images per optimizer step")
    bench.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    bench.add_argument("--test-images", type=int, default=2000, help="test images scored at the end")
    bench.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                       help="a model option (repeatable; see 'densitylab list MODEL')")
    bench.add_argument("--lr", type=float, help="peak learning rate (default: the model's)")
    bench.add_argument("--sample-count", type=int, default=64, help="images to sample (0: skip)")
    bench.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    return parser


def _format_default(value: Any) -> str:
    return "None" if value is None else json.dumps(value) if isinstance(value, list) else str(value)


def cmd_list(args: argparse.Namespace) -> int:
    from densitylab import catalog

    if args.model:
        return _list_model(args.model)
    models = catalog.models()
    print("models:  (options of one: densitylab list MODEL)")
    for name, entry in models.items():
        print(f"  {name:<16} [{entry.family}] {entry.description}")
    print("datasets:")
    for name, description in catalog.datasets().items():
        print(f"  {name:<16} {description}")
    print(f"  {'PATH':<16} your own .npy/.npz of uint8 images or a folder of PNG images")
    print("experiments:")
    for name, claim in catalog.experiments().items():
        print(f"  {name:<16} {claim}")
    return 0


def _list_model(name: str) -> int:
    from densitylab import catalog

    entry = catalog.model(name)
    if entry is None:
        raise DensitylabError(f"unknown model {name!r}; choose one of "
                              f"{', '.join(catalog.models())} (see 'densitylab list')")
    print(f"{entry.name} [{entry.family}]: {entry.description}")
    if entry.default_lr is not None:
        print(f"default learning rate: {entry.default_lr:g} (--lr)")
    print("options (--model-opt KEY=VALUE):")
    rows = [(o.name, o.type, _format_default(o.default), o.help) for o in entry.options]
    widths = [max(len(r[k]) for r in rows) for k in range(3)] if rows else [0, 0, 0]
    for row in rows:
        print("  " + "  ".join(row[k].ljust(widths[k]) for k in range(3)) + "  " + row[3])
    return 0


_TRAIN_FLAGS = ("data", "data_dir", "context_columns", "n_bits", "conditional", "epochs", "time_budget",
                "batch_size", "lr", "ema", "device", "precision", "compile", "channels_last", "seed",
                "threads", "eval_every", "checkpoint_every", "sample_count")


def cmd_train(args: argparse.Namespace) -> int:
    """Train a run; under ``torchrun`` every process runs this, and rank 0 reports."""
    from densitylab.train import distributed

    try:
        return _train(args)
    finally:
        distributed.shutdown()


def _train(args: argparse.Namespace) -> int:
    from densitylab.config import RunConfig
    from densitylab.train import distributed
    from densitylab.train.trainer import Trainer, resume_config

    flags = {k: getattr(args, k) for k in _TRAIN_FLAGS}
    clear_budget = args.time_budget is not None and args.time_budget.strip().lower() == "none"
    if clear_budget:
        flags["time_budget"] = None
    shortcuts = {"head": args.head} if args.head else {}
    if args.coords:
        shortcuts["coords"] = True
    if args.dequantization:
        shortcuts["dequantization"] = args.dequantization
    if args.resume:
        if args.model or args.config or args.model_opt or args.out or shortcuts:
            raise DensitylabError("--resume RUN_DIR takes the run's own config; drop MODEL, "
                                  "--config, --model-opt, --head, --coords, --dequantization and --out")
        config = resume_config(args.resume, flags, clear_budget)
        trainer = Trainer(config, args.resume, resume=True, progress=not args.no_progress)
        run_dir = Path(args.resume)
    else:
        values = RunConfig.load(args.config).to_dict() if args.config else RunConfig().to_dict()
        if args.model:
            if args.config and args.model != values["model"]:
                values["model_config"] = {}
            values["model"] = args.model
        elif not args.config:
            raise DensitylabError("name a model (densitylab train pixelcnn ...) or pass --config")
        values.update({k: v for k, v in flags.items() if v is not None})
        if clear_budget:
            values["time_budget"] = None
        values["model_config"] = (
            dict(values.get("model_config") or {}) | shortcuts | parse_model_options(args.model_opt)
        )
        config = RunConfig.from_dict(values)
        if not args.out:
            raise DensitylabError("say where the run goes: --out RUN_DIR")
        run_dir = Path(args.out)
        trainer = Trainer(config, run_dir, force=args.force, progress=not args.no_progress)
    results = trainer.fit()
    if not distributed.is_main():
        return 0
    unit = results["unit"]
    value = results["test_nats_per_dim" if unit == "nats/dim" else "test_bits_per_dim"]
    print(f"{results['model']} on {results['data']}: test {unit} {value:.4f} ({results['bound']}); "
          f"{results['steps']} steps in {results['train_seconds']:.1f} s of training, then "
          f"{results['finish_seconds']:.1f} s evaluating and sampling; run in {run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from densitylab.config import RunConfig
    from densitylab.data import load_dataset
    from densitylab.evaluate import bits_per_dim
    from densitylab.train.checkpoint import model_from_checkpoint
    from densitylab.train.rundir import CONFIG_FILE
    from densitylab.train.trainer import resolve_device

    if args.iw < 1 or args.batch_size < 1:
        raise DensitylabError("--iw and --batch-size must be at least 1")
    if args.max_images is not None and args.max_images < 1:
        raise DensitylabError(f"--max-images must be at least 1, got {args.max_images} (leave it out "
                              "to score every image)")
    model, header = model_from_checkpoint(args.run_dir, resolve_device(args.device))
    run_dir = Path(args.run_dir)
    config_path = (run_dir.parent if run_dir.is_file() else run_dir) / CONFIG_FILE
    run = RunConfig.load(config_path) if config_path.is_file() else RunConfig(
        data=header.get("dataset", {}).get("name", RunConfig.data))
    data = load_dataset(args.data or run.data, run.n_bits, args.data_dir or run.data_dir,
                        run.context_columns)
    if data.shape != model.shape or data.levels != model.levels:
        raise DensitylabError(
            f"the model expects {model.shape} images with {model.levels} levels, the data has "
            f"{data.shape} with {data.levels}; choose matching --data"
        )
    images = data.test if args.split == "test" else data.train
    labels = data.test_labels if args.split == "test" else data.train_labels
    images = images[: args.max_images] if args.max_images else images
    if getattr(model, "n_classes", 0):
        if labels is None:
            raise DensitylabError(f"the model is class-conditional and {data.name} has no labels")
        labels = labels[: len(images)]
    elif model.conditional:  # a flow of p(x | context): the data's own contexts
        context = data.test_context if args.split == "test" else data.train_context
        if context is None:
            raise DensitylabError(f"the model is conditional and {data.name} has no context columns")
        labels = context[: len(images)]
    else:
        labels = None
    exact = model.family != "flow" or data.continuous
    if exact and args.iw > 1:
        what = "density of continuous data" if data.continuous else "log-likelihood"
        print(f"densitylab: --iw {args.iw} has nothing to do: {header['model']}'s {what} is exact "
              "(no dequantization bound to tighten)", file=sys.stderr)
    bpd = bits_per_dim(model, images, args.batch_size, args.seed, 1 if exact else args.iw, labels)
    kind = "exact" if model.family != "flow" else (
        "exact density" if data.continuous
        else f"importance-weighted, {args.iw} dequantization samples" if args.iw > 1
        else "dequantization bound"
    )
    value = {"nats_per_dim": bpd * math.log(2)} if data.continuous else {"bits_per_dim": bpd}
    print(json.dumps({"model": header["model"], "data": data.name, "split": args.split,
                      "images": len(images), **value, "kind": kind}))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from densitylab.models.flows.autoregressive import set_method
    from densitylab.train import rundir
    from densitylab.train.checkpoint import model_from_checkpoint
    from densitylab.train.progress import is_terminal
    from densitylab.train.trainer import resolve_device
    from densitylab.viz.grid import save_grid

    if args.n < 1:
        raise DensitylabError("-n must be at least 1")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise DensitylabError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    output = Path(args.output) if args.output else Path(args.run_dir) / rundir.GRID_FILE
    if output.is_dir():
        raise DensitylabError(f"-o {output} is a directory; give a file name, e.g. {output / 'grid.png'}")
    rundir.check_writable(output, "-o", file=True)
    model, _ = model_from_checkpoint(args.run_dir, resolve_device(args.device))
    if args.float64:
        model.double()
    generator = torch.Generator().manual_seed(args.seed)
    n_classes = getattr(model, "n_classes", 0)
    labels, nrow, row_labels = None, None, None
    if args.label is not None:
        if not n_classes:
            raise DensitylabError("--label needs a class-conditional model (train with --conditional)")
        if not 0 <= args.label < n_classes:
            raise DensitylabError(f"--label must lie in 0..{n_classes - 1}")
        labels = torch.full((args.n,), args.label, dtype=torch.long)
        nrow = max(1, math.ceil(math.sqrt(args.n)))
        row_labels = [f"class {args.label}"] * math.ceil(args.n / nrow)
    elif n_classes:  # one row per class
        nrow = -(-args.n // n_classes)
        labels = torch.arange(n_classes).repeat_interleave(nrow)
        row_labels = [f"class {k}" for k in range(n_classes)]
    if model.conditional and not n_classes:  # a flow of p(x | context)
        labels = _context_row(args.context, model.context_features)
    elif args.context is not None:
        raise DensitylabError("--context applies to conditional flows (trained with --context-columns)")
    options = {}
    if getattr(model, "family", None) == "autoregressive":
        options = {"method": args.method, "progress": not args.no_progress and is_terminal(sys.stderr)}
    elif args.method is not None and not set_method(model, args.method):
        raise DensitylabError(f"--method applies to autoregressive models, MAF and IAF; "
                              f"{model.registry_name!r} samples in one pass")
    started = time.perf_counter()
    samples = model.sample(len(labels) if labels is not None and n_classes else args.n, labels,
                           temperature=args.temperature, generator=generator, **options)
    seconds = time.perf_counter() - started
    if len(model.shape) != 3:  # vectors (the toys): a histogram
        from densitylab.viz.points import save_points_plot

        save_points_plot(output, samples, f"{len(samples)} samples", model.levels)
    else:
        save_grid(output, samples, model.levels, nrow=nrow, row_labels=row_labels)
    print(f"wrote {len(samples)} samples to {output} (drawn in {seconds:.2f} s)")
    return 0


def _context_row(text: str | None, width: int):
    """``--context "1.5,0"`` -> a ``(1, width)`` tensor (one context for every sample)."""
    import torch

    if text is None:
        raise DensitylabError(f"this flow is conditional: give --context with {width} comma-separated "
                              "numbers")
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise DensitylabError(f"--context must be {width} comma-separated numbers, got {text!r}") from None
    if len(values) != width or not all(math.isfinite(v) for v in values):
        raise DensitylabError(f"--context must be {width} finite numbers, got {text!r}")
    return torch.tensor([values])


def cmd_demo(args: argparse.Namespace) -> int:
    from densitylab.demo import run_demo

    run_demo(Path(args.out), args.time_budget)
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from densitylab.experiments import EXPERIMENTS, experiment_names, run_experiment

    names = experiment_names() if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in EXPERIMENTS:
        raise DensitylabError(f"unknown experiment {args.name!r}; choose from all, "
                              f"{', '.join(experiment_names())}")
    out = Path(args.out)
    if args.name != "all":
        record = run_experiment(args.name, out, args.budget, args.seed)
        print(f"{args.name}: {record['outcome']}: {record['verdict']} ({out})", flush=True)
        return 0
    from densitylab.experiments.runner import default_jobs, run_all

    def report(result: dict) -> None:
        said = result.get("error") or f"{result['outcome']}: {result['verdict']}"
        print(f"{result['name']}: {said} ({out / result['name']}, {result['seconds'] / 60:.1f} min)",
              flush=True)

    timed = {name for name in names if EXPERIMENTS[name].timed}
    record = run_all(names, timed, out, args.budget, args.seed, args.jobs or default_jobs(), report)
    failed = [name for name, r in record["experiments"].items() if "error" in r]
    print(f"all: {len(names)} experiments in {record['wall_s'] / 60:.1f} minutes ({record['jobs']} "
          f"at a time; {', '.join(record['timed_alone']) or 'none'} alone first)", flush=True)
    if failed:
        raise DensitylabError(f"{len(failed)} experiment(s) failed: {', '.join(failed)} (the others' "
                              f"results are in {out}); rerun one with 'densitylab experiment NAME'")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from densitylab.report import render_report

    count = render_report([Path(d) for d in args.dirs], Path(args.output))
    print(f"wrote {args.output} ({count} experiments and training runs)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from densitylab.bench import fixed_budget

    result = fixed_budget(args.model, args.data, args.minutes, args.batch_size, args.threads,
                          args.test_images, parse_model_options(args.model_opt), args.lr,
                          args.data_dir, args.out, args.sample_count, args.n_bits)
    print(json.dumps(result))
    return 0


COMMANDS = {"list": cmd_list, "train": cmd_train, "eval": cmd_eval, "sample": cmd_sample,
            "demo": cmd_demo, "experiment": cmd_experiment, "report": cmd_report,
            "bench": cmd_bench}


def _debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (accepted anywhere before ``--``), and whether debugging is on."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    return argv, debug or os.environ.get("DENSITYLAB_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    from densitylab.runtime import keep_large_allocations_in_heap

    argv, debug = _debug_flag(list(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (one line, code 2) and --help (code 0)
        return int(exc.code or 0)
    keep_large_allocations_in_heap()
    try:
        return COMMANDS[args.command](args)
    except Exception as exc:  # the one error path: a user's mistake is one line and exit code 2
        message = user_message(exc)
        if message is None:
            raise  # a bug: the traceback
        if debug:
            traceback.print_exc()
        print(f"densitylab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("densitylab: interrupted; a training run continues with "
              "'densitylab train --resume RUN_DIR'", file=sys.stderr)
        return 130
