from pathlib import Path

import pytest

from densitylab.train.trainer import Trainer
from tests.faults.helpers import tiny_config


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run (config, metrics, checkpoint, model, results, samples); copy it before
    damaging anything."""
    run = tmp_path_factory.mktemp("faults") / "run"
    Trainer(tiny_config(), run, progress=False).fit()
    return run
