import json

import torch

from densitylab import build_model
from densitylab.experiments.realnvp_masks import (
    MASKS,
    eval_curve,
    images_per_second,
    lowest,
    save_sample_panels,
)
from densitylab.models.flows.coupling import AffineCoupling


def test_every_mask_is_a_realnvp_option_and_changes_the_spatial_couplings():
    for mask in MASKS:
        model = build_model("realnvp", (1, 8, 8), 17, {"mask": mask})
        spatial = [m.mask_kind for m in model.modules()
                   if isinstance(m, AffineCoupling) and m.mask_kind != "channel"]
        assert spatial and set(spatial) == {mask}


def test_eval_curve_reads_only_the_periodic_evaluations(tmp_path):
    lines = [{"step": 20, "train_bpd": 5.0, "train_seconds": 1.0}, {"step": 40, "test_bpd": 4.5},
             {"step": 80, "test_bpd": 4.2}, {"step": 80, "test_bpd_full": 4.25}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert eval_curve(path) == [[40, 4.5], [80, 4.2]]


def test_lowest_and_images_per_second():
    assert lowest({"checkerboard": 3.6, "top-bottom": 3.5, "left-right": 3.7}) == "top-bottom"
    assert images_per_second({"steps": 100, "train_seconds": 20.0}, 64) == 320.0


def test_sample_panels_are_written(tmp_path):
    samples = {mask: torch.randint(0, 17, (36, 1, 8, 8)) for mask in MASKS}
    save_sample_panels(tmp_path / "s.png", samples, 17)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
