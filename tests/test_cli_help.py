"""The command line's help: defaults on every flag, --version, list MODEL, speed (no torch)."""

import argparse
import subprocess
import sys

import pytest

from densitylab import __version__, catalog
from densitylab.cli import build_parser, main

NO_TORCH = ("import sys; from densitylab.cli import main; code = main({argv!r}); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")


def _subcommands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["list"], ["list", "pixelcnn"],
                                  ["train", "--help"], ["experiment", "--help"]])
def test_help_version_and_list_do_not_import_torch(argv):
    done = subprocess.run([sys.executable, "-c", NO_TORCH.format(argv=argv)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"densitylab {__version__}"


def test_every_flag_has_help_and_shows_its_default():
    for name, sub in _subcommands(build_parser()).items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest} has no help"
            text = formatter._get_help_string(action)
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in text, f"{name} {action.dest}: the default is not shown"


def test_train_help_names_the_run_defaults(capsys):
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--batch-size", "64"), ("--seed", "0"), ("--eval-every", "500"),
                          ("--sample-count", "36"), ("--data", "mnist5k")):
        assert flag in out and f"(default: {default})" in out, flag
    assert "--lr" in out and "the model's" in out


def test_experiment_help_lists_every_experiment(capsys):
    assert main(["experiment", "--help"]) == 0
    out = capsys.readouterr().out
    for name in catalog.experiments():
        assert f"\n  {name}\n" in out, name


def test_list_model_prints_each_option_with_type_default_and_meaning(capsys):
    assert main(["list", "pixelcnn"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pixelcnn [autoregressive]")
    assert "default learning rate: 0.012" in out
    lines = {line.split()[0]: line.split(None, 3) for line in out.splitlines() if line.startswith("  ")}
    for option in catalog.model("pixelcnn").options:
        name, type_, default, meaning = lines[option.name]
        assert (type_, default) == (option.type, str(option.default)), option.name
        assert meaning == option.help


def test_list_unknown_model_is_a_one_line_error(capsys):
    assert main(["list", "pixelcnnn"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'pixelcnnn'" in err and "pixelcnn" in err
