import pytest
import torch

from densitylab.nn.heads import DiscretizedLogisticMixtureHead, SoftmaxHead, make_head


@pytest.mark.parametrize("levels", [2, 4, 256])
@pytest.mark.parametrize("log_scale", [-7.0, -3.0, 0.0, 5.0])
def test_mixture_levels_sum_to_one_for_sharp_and_flat_components(levels, log_scale):
    head = DiscretizedLogisticMixtureHead(levels, components=3)
    params = torch.randn(50, 9, dtype=torch.double) * 2
    params[:, 6:] = log_scale
    total = torch.logsumexp(head.level_logits(params), -1)
    assert torch.allclose(total, torch.zeros(50, dtype=torch.double), atol=1e-10)


def test_mixture_log_prob_picks_the_level_probability():
    head = DiscretizedLogisticMixtureHead(256, components=4)
    params = torch.randn(3, 2, 12, 4, 5, dtype=torch.double)  # (B, C, P, H, W)
    x = torch.randint(0, 256, (3, 2, 4, 5))
    table = head.level_logits(params.movedim(2, -1))  # (B, C, H, W, K)
    expected = table.gather(-1, x.unsqueeze(-1)).flatten(1).sum(1)
    assert torch.allclose(head.log_prob(params, x), expected, atol=1e-10)


def test_mixture_gradients_stay_finite_at_the_scale_limits():
    head = DiscretizedLogisticMixtureHead(256, components=2)
    params = torch.tensor([[0.0, 0.0, -1.0, 1.0, -50.0, 50.0]], requires_grad=True)
    x = torch.tensor([[0, 255, 128]])
    log_p = head.log_prob(params.view(1, 1, 6, 1, 1).expand(1, 1, 6, 1, 3).contiguous(),
                          x.view(1, 1, 1, 3))
    log_p.sum().backward()
    assert torch.isfinite(log_p).all() and torch.isfinite(params.grad).all()


def test_softmax_head_and_factory():
    head = make_head("softmax", 5)
    assert isinstance(head, SoftmaxHead) and head.params_per_channel == 5
    assert make_head("logistic-mixture", 256, 10).params_per_channel == 30
    with pytest.raises(ValueError, match="softmax"):
        make_head("gaussian", 4)
