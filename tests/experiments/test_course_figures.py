import torch

from densitylab.experiments.course_figures import label_accuracy


class LabelledDistance:
    """A stand-in conditional model: log P(x | y) = -(mean(x) - y)^2."""

    def log_prob(self, x, cond):
        return -(x.float().flatten(1).mean(1) - cond.float()) ** 2


def test_label_accuracy_is_the_argmax_classifier():
    images = torch.stack([torch.full((1, 2, 2), v) for v in (0, 1, 2, 2)])
    labels = torch.tensor([0, 1, 2, 0])  # the last is closest to class 2, not its label 0
    assert label_accuracy(LabelledDistance(), images, labels, 3) == 0.75
