import numpy as np
import torch
from PIL import Image

from densitylab.viz.grid import image_grid, pad_colour, save_grid


def test_padding_of_a_grey_grid_is_no_grey_level():
    images = torch.arange(256).view(4, 1, 8, 8)  # every grey level
    grid = image_grid(images, 256, nrow=2, pad=2)
    assert grid.shape == (2 * 10 + 2, 2 * 10 + 2, 3)
    frame = tuple(grid[0, 0])
    assert frame == pad_colour(images.to(torch.uint8))
    assert frame[0] != frame[1] or frame[1] != frame[2]  # a colour, not a grey
    inner = grid[2:10, 2:10]
    assert (inner[..., 0] == inner[..., 1]).all() and (inner[..., 1] == inner[..., 2]).all()
    assert inner[..., 0].flatten().tolist() == list(range(64))


def test_padding_of_a_colour_grid_avoids_the_images_colours():
    first = torch.tensor((40, 90, 200), dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    images = torch.cat([first, torch.zeros(1, 3, 4, 4, dtype=torch.uint8)])
    colour = pad_colour(images)
    used = {tuple(p) for p in images.permute(0, 2, 3, 1).reshape(-1, 3).tolist()}
    assert colour not in used


def test_row_labels_add_a_left_margin(tmp_path):
    images = torch.randint(0, 2, (6, 1, 8, 8))
    plain = np.asarray(Image.open(save_grid(tmp_path / "a.png", images, 2, nrow=3)))
    labelled = np.asarray(Image.open(save_grid(tmp_path / "b.png", images, 2, nrow=3,
                                               row_labels=["class 0", "class 1"])))
    assert labelled.shape[0] == plain.shape[0] and labelled.shape[1] > plain.shape[1]
    width = labelled.shape[1] - plain.shape[1]
    assert (labelled[:, width:] == plain).all()
    assert (labelled[:, :width] < 100).any()  # the text
