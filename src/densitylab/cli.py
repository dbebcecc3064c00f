"""The ``densitylab`` command line: list, train, eval, sample, demo, bench."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from densitylab.errors import DensitylabError


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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="densitylab",
        description="Train, evaluate and sample autoregressive models and normalizing flows, "
        "scored in exact bits/dim.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    sub.add_parser("list", help="every model and dataset, one line each")

    train = sub.add_parser("train", help="train a model into a run directory")
    train.add_argument("model", nargs="?", help="model name (see 'densitylab list')")
    train.add_argument("--config", help="RUN.yaml with settings; flags override it")
    train.add_argument("--data", help="dataset name, .npy/.npz file or image folder")
    train.add_argument("--data-dir", help="where MNIST/Fashion-MNIST IDX files live")
    train.add_argument("--n-bits", type=int, help="quantize to 2**N levels (1 = binarize)")
    train.add_argument("--conditional", action="store_true", default=None,
                       help="class-conditional model: the dataset's labels feed the model")
    train.add_argument("--epochs", type=float, help="number of passes over the training set")
    train.add_argument("--time-budget", help="stop after this much training, e.g. 90s, 10m, 1h")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--device", help="auto, cpu or cuda")
    train.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                       help="fp32 (default), or autocast the networks to bf16 / fp16 (fp16: CUDA "
                       "only); log-likelihoods and the loss stay fp32")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the training loss (first steps slower while it compiles)")
    train.add_argument("--seed", type=int)
    train.add_argument("--threads", type=int, help="CPU threads for torch")
    train.add_argument("--eval-every", type=int, help="steps between test evaluations")
    train.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    train.add_argument("--sample-count", type=int, help="samples drawn into samples.png at the end")
    train.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                       help="a model option, e.g. hidden_channels=32 (repeatable)")
    train.add_argument("--head", choices=("softmax", "logistic-mixture"),
                       help="output distribution of PixelCNN / Gated PixelCNN (= --model-opt head=...)")
    train.add_argument("--coords", action="store_true",
                       help="feed each position's (row, column) to rnn / wavenet (= --model-opt coords=true)")
    train.add_argument("--dequantization", choices=("uniform", "variational"),
                       help="how a flow dequantizes discrete data: uniform noise or a learned q(u|x), "
                       "Flow++ (= --model-opt dequantization=...)")
    train.add_argument("--out", help="run directory")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    train.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    ev = sub.add_parser("eval", help="test bits/dim of a trained run")
    ev.add_argument("run_dir")
    ev.add_argument("--data", help="evaluate on another dataset (same shape and levels)")
    ev.add_argument("--data-dir")
    ev.add_argument("--split", choices=("test", "train"), default="test")
    ev.add_argument("--iw", type=int, default=1, metavar="S",
                    help="flows: importance-weighted bound with S dequantization samples")
    ev.add_argument("--max-images", type=int, help="evaluate on the first N images only")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto")

    sample = sub.add_parser("sample", help="write a grid of samples from a trained run")
    sample.add_argument("run_dir")
    sample.add_argument("-n", type=int, default=64, help="number of samples")
    sample.add_argument("-o", "--output", default=None, help="PNG path (default RUN_DIR/grid.png)")
    sample.add_argument("--temperature", type=float, default=1.0)
    sample.add_argument("--label", type=int, help="class-conditional models: sample this class "
                        "(default: a grid with one row per class)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--method", choices=["cached", "naive"],
                        help="autoregressive models: reuse earlier steps' activations (cached, the "
                        "default where the model has it) or run the whole network per sub-pixel "
                        "(naive); the same --seed gives the same images")
    sample.add_argument("--float64", action="store_true",
                        help="sample in float64: cached and naive then agree even on draws that "
                        "float32 rounding could tip (about 1 in 50,000; slower)")
    sample.add_argument("--no-progress", action="store_true", help="no progress bar")
    sample.add_argument("--device", default="auto")

    demo = sub.add_parser("demo", help="train a small PixelCNN and RealNVP on real MNIST digits")
    demo.add_argument("--out", default="demo_runs")
    demo.add_argument("--time-budget", default="100s", help="training time per model")

    experiment = sub.add_parser("experiment", help="reproduce a claim of the course notes: "
                                "results.json and figures in --out (NAME all: every experiment)")
    experiment.add_argument("name", help="an experiment (see `densitylab list`) or all")
    experiment.add_argument("--out", required=True, help="directory for results.json and figures "
                            "(all: one sub-directory per experiment)")
    experiment.add_argument("--budget", choices=("tiny", "small", "full"), default="small",
                            help="tiny: seconds (a smoke test); small: a 2-core CPU, all in under an "
                            "hour; full: a GPU")
    experiment.add_argument("--seed", type=int, default=0)

    report = sub.add_parser("report", help="render experiment results into one self-contained HTML page")
    report.add_argument("dirs", nargs="+", help="experiment output directories (or a directory of them)")
    report.add_argument("-o", "--output", default="report.html")

    bench = sub.add_parser("bench", help="fixed-budget benchmark: train N minutes, report JSON")
    bench.add_argument("model")
    bench.add_argument("--data", default="fashion-mnist")
    bench.add_argument("--data-dir")
    bench.add_argument("--n-bits", type=int, help="quantize to 2**N levels (1 = binarize)")
    bench.add_argument("--minutes", type=float, default=8.0)
    bench.add_argument("--batch-size", type=int, default=64)
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument("--test-images", type=int, default=2000)
    bench.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE")
    bench.add_argument("--lr", type=float)
    bench.add_argument("--sample-count", type=int, default=64, help="images to sample (0: skip)")
    bench.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    from densitylab.data import DATASETS
    from densitylab.models.base import available_models

    print("models:")
    for name, info in sorted(available_models().items()):
        print(f"  {name:<16} [{info.cls.family}] {info.description}")
    print("datasets:")
    for name, info in DATASETS.items():
        print(f"  {name:<16} {info.description}")
    print(f"  {'PATH':<16} your own .npy/.npz of uint8 images or a folder of PNG images")
    from densitylab.experiments import EXPERIMENTS, experiment_names

    print("experiments:")
    width = max(map(len, experiment_names()))
    for name in experiment_names():
        print(f"  {name:<{width}} {EXPERIMENTS[name].claim}")
    return 0


_TRAIN_FLAGS = ("data", "data_dir", "n_bits", "conditional", "epochs", "time_budget", "batch_size", "lr",
                "device", "precision", "compile", "seed", "threads", "eval_every", "checkpoint_every",
                "sample_count")


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
    shortcuts = {"head": args.head} if args.head else {}
    if args.coords:
        shortcuts["coords"] = True
    if args.dequantization:
        shortcuts["dequantization"] = args.dequantization
    if args.resume:
        if args.model or args.config or args.model_opt or args.out or shortcuts:
            raise DensitylabError("--resume RUN_DIR takes the run's own config; drop MODEL, "
                                  "--config, --model-opt, --head, --coords, --dequantization and --out")
        config = resume_config(args.resume, flags)
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
    print(f"{results['model']} on {results['data']}: test {unit} {value:.4f}"
          f" ({results['bound']}); run in {run_dir}")
    return 0


def _run_model_path(run_dir: str) -> Path:
    from densitylab.train.trainer import CHECKPOINT_FILE, MODEL_FILE

    path = Path(run_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DensitylabError(f"run directory {path} does not exist")
    for name in (MODEL_FILE, CHECKPOINT_FILE):
        if (path / name).is_file():
            return path / name
    raise DensitylabError(f"{path} holds no model.safetensors or checkpoint; train it first")


def cmd_eval(args: argparse.Namespace) -> int:
    from densitylab.config import RunConfig
    from densitylab.data import load_dataset
    from densitylab.evaluate import bits_per_dim
    from densitylab.train.checkpoint import model_from_checkpoint
    from densitylab.train.trainer import CONFIG_FILE, resolve_device

    if args.iw < 1 or args.batch_size < 1:
        raise DensitylabError("--iw and --batch-size must be at least 1")
    model, header = model_from_checkpoint(_run_model_path(args.run_dir), resolve_device(args.device))
    config_path = Path(args.run_dir) / CONFIG_FILE
    run = RunConfig.load(config_path) if config_path.is_file() else RunConfig()
    data = load_dataset(args.data or run.data, run.n_bits, args.data_dir or run.data_dir)
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
    else:
        labels = None
    bpd = bits_per_dim(model, images, args.batch_size, args.seed, args.iw, labels)
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

    from densitylab.train.checkpoint import model_from_checkpoint
    from densitylab.train.trainer import resolve_device
    from densitylab.viz.grid import save_grid

    if args.n < 1:
        raise DensitylabError("-n must be at least 1")
    if args.temperature < 0:
        raise DensitylabError("--temperature must be >= 0")
    model, _ = model_from_checkpoint(_run_model_path(args.run_dir), resolve_device(args.device))
    model.eval()
    if args.float64:
        model.double()
    generator = torch.Generator().manual_seed(args.seed)
    n_classes = getattr(model, "n_classes", 0)
    labels, nrow = None, None
    if args.label is not None:
        if not n_classes:
            raise DensitylabError("--label needs a class-conditional model (train with --conditional)")
        if not 0 <= args.label < n_classes:
            raise DensitylabError(f"--label must lie in 0..{n_classes - 1}")
        labels = torch.full((args.n,), args.label, dtype=torch.long)
    elif n_classes:  # one row per class
        nrow = -(-args.n // n_classes)
        labels = torch.arange(n_classes).repeat_interleave(nrow)
    options = {}
    if getattr(model, "family", None) == "autoregressive":
        options = {"method": args.method, "progress": not args.no_progress}
    elif args.method is not None:
        raise DensitylabError(f"--method applies to autoregressive models; {model.registry_name!r} "
                              "samples in one pass")
    samples = model.sample(len(labels) if labels is not None else args.n, labels,
                           temperature=args.temperature, generator=generator, **options)
    output = Path(args.output) if args.output else Path(args.run_dir) / "grid.png"
    if len(model.shape) != 3:  # vectors (the toys): a histogram
        from densitylab.viz.points import save_points_plot

        save_points_plot(output, samples, f"{len(samples)} samples", model.levels)
    else:
        save_grid(output, samples, model.levels, nrow=nrow)
    print(f"wrote {len(samples)} samples to {output}")
    return 0


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
    for name in names:
        target = out / name if args.name == "all" else out
        record = run_experiment(name, target, args.budget, args.seed)
        print(f"{name}: {record['outcome']}: {record['verdict']} ({target})", flush=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from densitylab.report import render_report

    count = render_report([Path(d) for d in args.dirs], Path(args.output))
    print(f"wrote {args.output} ({count} experiments)")
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


def main(argv: list[str] | None = None) -> int:
    from densitylab.runtime import keep_large_allocations_in_heap

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (one line, code 2) and --help (code 0)
        return int(exc.code or 0)
    keep_large_allocations_in_heap()
    try:
        return COMMANDS[args.command](args)
    except DensitylabError as exc:
        print(f"densitylab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("densitylab: interrupted; a training run continues with "
              "'densitylab train --resume RUN_DIR'", file=sys.stderr)
        return 130
