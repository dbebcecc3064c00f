"""What the command line lists, read without importing torch: models, their options, experiments.

Importing the model and experiment modules imports torch, which takes seconds; ``densitylab list``
and ``densitylab --help`` must answer at once. So this module reads the same facts from the source
files' syntax trees: each ``@register_model(name, description)`` class, its ``Config`` dataclass
(each field's type, default and the comment on its line) and each ``@experiment(name, claim)``.
Whatever it cannot resolve statically it takes from the imported registries instead
(:func:`runtime_model`), so the answer is always right and usually fast; the tests check that the
two readings agree for every model and experiment.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
MODEL_PACKAGES = {"autoregressive": "autoregressive", "flows": "flow"}  # sub-package -> family

# One line per option name, for options whose Config field carries no comment of its own.
OPTION_HELP: dict[str, str] = {
    "activation": "nonlinearity of the ODE network",
    "actnorm": "an ActNorm layer (per-channel affine, data-initialised) after each transform",
    "adjoint": "O(1)-memory adjoint gradients instead of backpropagating through the solver",
    "alpha": "margin of the logit map for discrete data: y = alpha + (1 - 2 alpha) x",
    "atol": "absolute tolerance of the ODE solver",
    "bins": "spline bins per dimension (transform=spline)",
    "cell": "recurrent cell: lstm or gru",
    "context_features": "> 0: a conditional flow p(x | context) with this many context values "
                        "(set by --context-columns)",
    "conv_layers": "hidden 3x3 convolutions of the ODE network on images",
    "coords": "feed each step the (row, column) of the predicted pixel",
    "couplings": "number of coupling layers",
    "couplings_per_mask": "coupling layers per mask at every scale",
    "degrees": "hidden-unit degrees of the masked layers: random or sequential",
    "dequantization": "how discrete data is dequantized: uniform or variational (Flow++)",
    "end_time": "integration time T of the ODE",
    "eval_exact_max_dim": "in evaluation, exact trace for data of at most this many dimensions",
    "exact_max_dim": "in training, exact trace for data of at most this many dimensions",
    "final_couplings": "coupling layers at the last scale",
    "first_kernel": "kernel size of the first (mask-A) convolution",
    "gate_channels": "width of the horizontal gates (None: half of hidden_channels)",
    "head": "output distribution per sub-pixel: softmax or logistic-mixture",
    "hidden": "hidden units per layer",
    "hidden_channels": "channels of the hidden convolutions",
    "hidden_features": "hidden units per layer of each coupling's MLP",
    "hidden_layers": "hidden layers of each coupling (or conditioner) network",
    "hidden_size": "hidden units of each recurrent layer",
    "hidden_sizes": "hidden layer widths of each masked MLP",
    "kernel": "kernel size of the gated layers",
    "kind": "mixture component: gaussian or logistic",
    "layers_per_block": "dilated layers per block (dilations 1 .. 2^(L-1))",
    "learn_end_time": "learn the integration time T",
    "learn_top": "a learned per-channel Gaussian prior at the top scale (else N(0, I))",
    "mask": "spatial mask: checkerboard, top-bottom or left-right",
    "mixture_components": "logistic components per sub-pixel (head=logistic-mixture)",
    "n_blocks": "number of blocks",
    "n_classes": "> 0: class-conditional on this many classes (set by --conditional)",
    "n_components": "mixture components of the CDF",
    "n_layers": "number of layers",
    "n_masks": "> 1: connectivity-agnostic training, an exact mixture at evaluation",
    "n_residual_blocks": "residual blocks of mask-B convolutions",
    "n_scales": "scales of the multi-scale architecture (each halves H and W)",
    "n_transforms": "number of autoregressive transforms",
    "noise": "Hutchinson probe distribution: rademacher or gaussian",
    "order_seed": "seeds random orderings and hidden degrees",
    "ordering": "pixel order of the factorisation",
    "output_hidden": "channels of the hidden 1x1 output layer",
    "output_rank": "features per sub-pixel behind the factored logits",
    "permutation": "order between transforms: reverse or random",
    "preprocess": "map of the dequantized data before the flow: logit, center or none",
    "prior": "base distribution: gaussian, logistic or uniform",
    "residual_channels": "channels of the residual stream",
    "resample_order": "with n_masks > 1: a random pixel order for each mask set but the first",
    "rtol": "relative tolerance of the ODE solver",
    "scale_bound": "bound on the log-scale of each affine transform",
    "seed": "seeds the masks' degrees and the random permutations",
    "skip_channels": "channels of the skip connections",
    "solver": "torchdiffeq method (fixed-step ones need step_size)",
    "squeeze": "2x2 squeezes before the ODE network on images",
    "step_size": "step of a fixed-step solver",
    "steps": "flow steps (ActNorm, invertible linear map, affine coupling)",
    "steps_per_scale": "flow steps per scale",
    "tail_bound": "splines act on [-B, B], identity outside (transform=spline)",
    "trace": "log-determinant trace: auto, exact or hutchinson",
    "transform": "elementwise transform: affine or spline",
    "vertical_channels": "width of the vertical stack (None: half of hidden_channels)",
}


@dataclass(frozen=True)
class ModelOption:
    name: str
    type: str
    default: Any
    help: str


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    description: str
    options: tuple[ModelOption, ...]
    default_lr: float | None = None  # the learning rate a run uses when it sets none


class Unresolved(Exception):
    """A source construct this static reading does not follow (the runtime registry answers)."""


# ----- parsing helpers --------------------------------------------------------------------------
@cache
def _parse(path: Path) -> tuple[ast.Module, dict[int, str]]:
    """The module's syntax tree and its end-of-line comments by line number."""
    text = path.read_text()
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    return ast.parse(text), comments


def _module_path(module: str) -> Path:
    parts = module.split(".")
    if parts[0] != "densitylab":
        raise Unresolved(module)
    base = PACKAGE.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    raise Unresolved(module)


def _lookup(path: Path, name: str, depth: int = 0) -> tuple[Path, ast.AST]:
    """The top-level definition of ``name`` in ``path``, following ``from X import name``."""
    if depth > 5:
        raise Unresolved(name)
    tree, _ = _parse(path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return path, node
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value:
                return path, node.value
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _lookup(_module_path(node.module), alias.name, depth + 1)
    raise Unresolved(name)


def _value(path: Path, node: ast.AST, depth: int = 0) -> Any:
    """The value of a default: a literal, a module constant, or ``field(default_factory=...)``."""
    if depth > 5:
        raise Unresolved(ast.unparse(node))
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.Name):
        where, value = _lookup(path, node.id)
        return _value(where, value, depth + 1)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "field":
        for keyword in node.keywords:
            if keyword.arg == "default":
                return _value(path, keyword.value, depth + 1)
            if keyword.arg == "default_factory" and isinstance(keyword.value, ast.Lambda):
                return _value(path, keyword.value.body, depth + 1)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(path, node.operand, depth + 1)
    raise Unresolved(ast.unparse(node))


def _string_args(call: ast.Call) -> list[str]:
    return [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def _decorator(node: ast.ClassDef | ast.FunctionDef, name: str) -> list[str] | None:
    for decorator in node.decorator_list:
        if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Name)
                and decorator.func.id == name):
            return _string_args(decorator)
    return None


# ----- models -----------------------------------------------------------------------------------
def option_help(name: str, comment: str | None, docstring: str | None,
                choices: tuple[str, ...] = ()) -> str:
    """One line for a model option: the comment on its line (unless it only lists alternatives),
    else :data:`OPTION_HELP` (with ``choices``, the values a comment "one of NAME" points to),
    else the sentence of the Config docstring that names it."""
    if comment and not (comment.startswith(("or ", "one of ")) and name in OPTION_HELP):
        return comment  # (a bare list of alternatives reads better from the table)
    if name in OPTION_HELP:
        text = OPTION_HELP[name]
        missing = [c for c in choices if c not in text]
        return text + (f" ({', '.join(choices)})" if missing else "")
    for sentence in (docstring or "").replace("\n", " ").split(". "):
        if f"``{name}``" in sentence:
            return " ".join(sentence.replace("``", "").split())
    return ""


def _config_options(path: Path, class_name: str, depth: int = 0) -> list[ModelOption]:
    where, node = _lookup(path, class_name)
    if not isinstance(node, ast.ClassDef) or depth > 5:
        raise Unresolved(class_name)
    options: dict[str, ModelOption] = {}
    for base in node.bases:  # dataclass inheritance: the base's fields first
        if isinstance(base, ast.Name):
            options |= {o.name: o for o in _config_options(where, base.id, depth + 1)}
    _, comments = _parse(where)
    docstring = ast.get_docstring(node)
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            if item.value is None:
                raise Unresolved(item.target.id)  # a required field: not a model option
            name, comment = item.target.id, comments.get(item.lineno)
            options[name] = ModelOption(name, ast.unparse(item.annotation), _value(where, item.value),
                                        option_help(name, comment, docstring, _choices(where, comment)))
    return list(options.values())


def _choices(path: Path, comment: str | None) -> tuple[str, ...]:
    """The values of ``NAME`` in a comment ``one of NAME`` (a module constant), else none."""
    if not comment or not comment.startswith("one of "):
        return ()
    try:
        where, node = _lookup(path, comment.removeprefix("one of ").split()[0])
        values = _value(where, node)
    except (Unresolved, ValueError, IndexError):
        return ()
    return tuple(str(v) for v in values) if isinstance(values, tuple | list) else ()


def _register_call(node: ast.AST) -> ast.Call | None:
    """The ``@register_model(name, description, ...)`` decorator of a class or function."""
    for decorator in getattr(node, "decorator_list", []):
        if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Name)
                and decorator.func.id == "register_model" and len(_string_args(decorator)) >= 2):
            return decorator
    return None


def _static_models() -> dict[str, tuple[Path, ast.ClassDef | ast.FunctionDef, ast.Call, str]]:
    """Registered name -> (file, the decorated class or constructor, the decorator, package family)."""
    found = {}
    for package, family in MODEL_PACKAGES.items():
        for path in sorted((PACKAGE / "models" / package).glob("*.py")):
            tree, _ = _parse(path)
            for node in tree.body:
                call = _register_call(node)
                if call is not None:
                    found[_string_args(call)[0]] = (path, node, call, family)
    return found


def _class_attribute(path: Path, node: ast.ClassDef, attribute: str, depth: int = 0) -> tuple[Path, ast.AST]:
    """The node assigned to ``attribute`` in class ``node`` or, failing that, in its bases."""
    if depth > 8:
        raise Unresolved(attribute)
    for item in node.body:
        if (isinstance(item, ast.Assign) and len(item.targets) == 1
                and isinstance(item.targets[0], ast.Name) and item.targets[0].id == attribute):
            return path, item.value
        if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                and item.target.id == attribute and item.value is not None):
            return path, item.value
    for base in node.bases:
        if isinstance(base, ast.Name):
            where, parent = _lookup(path, base.id)
            if isinstance(parent, ast.ClassDef):
                try:
                    return _class_attribute(where, parent, attribute, depth + 1)
                except Unresolved:
                    continue
    raise Unresolved(attribute)


def _described(path: Path, node: ast.AST, call: ast.Call, attribute: str,
               default: Any) -> tuple[Path, ast.AST]:
    """Where ``register_model`` finds ``attribute``: its keyword argument, else the class's
    attribute; a constructor function without the keyword gets ``default``."""
    for keyword in call.keywords:
        if keyword.arg == attribute.lower():
            return path, keyword.value
    if isinstance(node, ast.ClassDef):
        return _class_attribute(path, node, attribute)
    if default is None:
        raise Unresolved(attribute)
    return path, ast.Constant(default)


def _static_entry(path: Path, node: ast.AST, call: ast.Call, package_family: str, name: str) -> ModelEntry:
    description = _string_args(call)[1]
    where, config = _described(path, node, call, "Config", None)
    if not isinstance(config, ast.Name):
        raise Unresolved(f"{name}.Config")
    family = _value(*_described(path, node, call, "family", package_family))
    default_lr = _value(*_described(path, node, call, "default_lr", 1e-3))
    return ModelEntry(name, str(family), description, tuple(_config_options(where, config.id)),
                      float(default_lr))


def _info(info: Any, attribute: str) -> Any:
    """An attribute of a registry entry (or, in an entry that wraps the class, of its class)."""
    return getattr(info, attribute) if hasattr(info, attribute) else getattr(info.cls, attribute)


def runtime_model(name: str) -> ModelEntry | None:
    """The entry of model ``name`` from the imported registry (imports torch)."""
    import dataclasses
    import inspect
    import sys

    from densitylab.models.registry import available_models

    info = available_models().get(name)
    if info is None:
        return None
    config = _info(info, "Config")
    options = []
    for f in dataclasses.fields(config):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        owner = next(c for c in config.__mro__ if f.name in c.__dict__.get("__annotations__", {}))
        comment = _field_comments(owner).get(f.name)
        choices: tuple[str, ...] = ()
        if comment and comment.startswith("one of "):
            values = getattr(sys.modules[owner.__module__], comment.split()[2], ())
            choices = tuple(str(v) for v in values) if isinstance(values, tuple | list) else ()
        options.append(ModelOption(f.name, type_name, default,
                                   option_help(f.name, comment, inspect.getdoc(owner), choices)))
    return ModelEntry(name, _info(info, "family"), info.description, tuple(options),
                      _info(info, "default_lr"))


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment on its line, from the source of dataclass ``cls``."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    found = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                field = lines[token.start[0] - 1].split(":")[0].strip()
                if field.isidentifier():
                    found[field] = token.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return found


def models() -> dict[str, ModelEntry]:
    """Every registered model with its family, description and options, sorted by name."""
    entries = {}
    for name, found in sorted(_static_models().items()):
        try:
            entries[name] = _static_entry(*found, name)
        except (Unresolved, SyntaxError, OSError):
            entry = runtime_model(name)
            if entry is not None:
                entries[name] = entry
    return entries


def model(name: str) -> ModelEntry | None:
    """One model's entry (statically where possible), or None for an unknown name."""
    found = _static_models().get(name)
    if found is not None:
        try:
            return _static_entry(*found, name)
        except (Unresolved, SyntaxError, OSError):
            pass
    return runtime_model(name)


# ----- experiments and datasets -----------------------------------------------------------------
def experiments() -> dict[str, str]:
    """Experiment name -> claim, in the order ``densitylab experiment all`` runs them."""
    found = {}
    for path in sorted((PACKAGE / "experiments").glob("*.py")):
        tree, _ = _parse(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                args = _decorator(node, "experiment")
                if args is not None and len(args) == 2:
                    found[args[0]] = args[1]
    try:
        _, order_node = _lookup(PACKAGE / "experiments" / "__init__.py", "ORDER")
        order = [n for n in ast.literal_eval(order_node) if n in found]
    except (Unresolved, ValueError):
        order = []
    return {n: found[n] for n in order + sorted(set(found) - set(order))}


def datasets() -> dict[str, str]:
    """Dataset name -> one-line description (the ``DATASETS`` table of :mod:`densitylab.data`)."""
    path = PACKAGE / "data" / "datasets.py"
    try:
        _, node = _lookup(path, "DATASETS")
        found = _dataset_infos(path, node)
    except (Unresolved, SyntaxError, OSError, ValueError):
        found = {}
    if found:
        return found
    from densitylab.data import DATASETS

    return {name: info.description for name, info in DATASETS.items()}


def _dataset_infos(path: Path, node: ast.AST) -> dict[str, str]:
    """``DatasetInfo(name, description, ...)`` calls under ``node``, with the generator
    ``*(DatasetInfo(name, f"...{name}...") for name in module.TABLE)`` expanded."""
    found: dict[str, str] = {}
    for call in ast.walk(node):
        if isinstance(call, ast.GeneratorExp):
            found |= _expand_generator(path, call)
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id == "DatasetInfo" and len(call.args) >= 2):
            continue
        name, description = call.args[:2]
        if isinstance(name, ast.Constant) and isinstance(description, ast.Constant):
            found[name.value] = description.value
    return found


def _expand_generator(path: Path, node: ast.GeneratorExp) -> dict[str, str]:
    if len(node.generators) != 1 or not isinstance(node.elt, ast.Call):
        raise Unresolved("generator")
    loop = node.generators[0]
    if not isinstance(loop.target, ast.Name):
        raise Unresolved("generator")
    source = loop.iter
    if isinstance(source, ast.Attribute) and isinstance(source.value, ast.Name):
        where, module = _lookup_module(path, source.value.id)
        _, table = _lookup(where, source.attr)
    else:
        raise Unresolved(ast.unparse(source))
    if not isinstance(table, ast.Dict | ast.Tuple | ast.List):
        raise Unresolved(ast.unparse(source))
    keys = table.keys if isinstance(table, ast.Dict) else table.elts
    found = {}
    for key in keys:
        value = ast.literal_eval(key)
        args = [_render(arg, loop.target.id, value) for arg in node.elt.args[:2]]
        found[args[0]] = args[1]
    return found


def _lookup_module(path: Path, name: str) -> tuple[Path, str]:
    """The file of a module imported as ``from package import name``."""
    tree, _ = _parse(path)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    module = f"{node.module}.{alias.name}"
                    return _module_path(module), module
    raise Unresolved(name)


def _render(node: ast.AST, variable: str, value: Any) -> str:
    """A string literal or an f-string whose only placeholder is ``variable``."""
    if isinstance(node, ast.Name) and node.id == variable:
        return str(value)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                parts.append(_render(part.value, variable, value))
            else:
                parts.append(_render(part, variable, value))
        return "".join(parts)
    raise Unresolved(ast.unparse(node))
