import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


def all_images(channels: int, height: int, width: int, levels: int) -> torch.Tensor:
    """Every image of the given shape with values in {0..levels-1}, as (levels**D, C, H, W)."""
    dim = channels * height * width
    grids = torch.cartesian_prod(*[torch.arange(levels)] * dim)
    return grids.view(-1, channels, height, width)
