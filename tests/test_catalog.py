"""The catalog read from the sources (no torch import) agrees with the imported registries."""

import dataclasses

from densitylab import catalog
from densitylab.data import DATASETS
from densitylab.experiments import EXPERIMENTS, experiment_names
from densitylab.models.registry import available_models


def test_static_models_match_the_registry():
    static = catalog.models()
    registry = available_models()
    assert list(static) == sorted(registry)
    for name, info in registry.items():
        entry = static[name]
        config = catalog._info(info, "Config")
        assert (entry.family, entry.description) == (catalog._info(info, "family"), info.description)
        assert entry.default_lr == catalog._info(info, "default_lr"), name
        assert [o.name for o in entry.options] == [f.name for f in dataclasses.fields(config)], name
        defaults = config()
        for option in entry.options:
            assert option.default == getattr(defaults, option.name), (name, option.name)
            assert option.help, f"{name}.{option.name} has no one-line description"


def test_static_reading_is_used_for_every_model(monkeypatch):
    def refuse(name):
        raise AssertionError(f"{name} needed the runtime registry")

    monkeypatch.setattr(catalog, "runtime_model", refuse)
    assert set(catalog.models()) == set(available_models())


def test_runtime_reading_gives_the_same_options():
    for name in available_models():
        static, runtime = catalog.model(name), catalog.runtime_model(name)
        assert [(o.name, o.default, o.help) for o in static.options] == [
            (o.name, o.default, o.help) for o in runtime.options], name


def test_experiments_and_datasets_match_their_registries():
    assert list(catalog.experiments()) == experiment_names()
    assert catalog.experiments() == {n: e.claim for n, e in EXPERIMENTS.items()}
    assert catalog.datasets() == {n: info.description for n, info in DATASETS.items()}


def test_option_help_prefers_the_fields_comment():
    assert catalog.option_help("head", "which head", None) == "which head"
    assert catalog.option_help("head", 'or "logistic-mixture"', None) == catalog.OPTION_HELP["head"]
    assert catalog.option_help("zz", None, "Text. ``zz``: the zz thing. More.") == "zz: the zz thing"
    assert catalog.model("no-such-model") is None
