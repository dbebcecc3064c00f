import numpy as np
import pytest
import torch

from densitylab.data import load_dataset
from densitylab.data.toy import TOYS_2D
from densitylab.errors import DensitylabError


@pytest.mark.parametrize("name", sorted(TOYS_2D))
def test_2d_toys_are_continuous_points(name):
    data = load_dataset(name)
    assert data.continuous and data.levels == 0 and data.shape == (2,)
    assert data.train.dtype == torch.float32 and len(data.train) == 20000 and len(data.test) == 5000
    assert torch.isfinite(data.train).all() and data.train.abs().max() < 6
    assert load_dataset(name).train.equal(data.train)  # generated from a fixed seed


def test_gaps_1d_is_discrete_with_empty_stretches():
    data = load_dataset("gaps-1d")
    assert not data.continuous and data.levels == 100 and data.shape == (1,)
    counts = np.bincount(data.train[:, 0].numpy(), minlength=100)
    assert (counts == 0).sum() >= 20  # gaps between the modes
    assert counts[20] > 0 and counts[50] > 0 and counts[80] > 0
    assert counts[33:36].sum() == 0 and counts[64:67].sum() == 0


def test_checkerboard_fills_only_alternate_squares():
    points = load_dataset("checkerboard").train
    cells = torch.floor((points + 4) / 2).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()


def test_toys_refuse_quantization():
    with pytest.raises(DensitylabError, match="continuous"):
        load_dataset("moons", n_bits=4)


def test_image_models_refuse_vectors_in_one_line():
    from densitylab import build_model

    with pytest.raises(DensitylabError, match="does not take continuous vectors"):
        build_model("pixelcnn", (2,), 0)
