import pytest
import torch

from densitylab import build_model
from densitylab.errors import DensitylabError
from densitylab.train.checkpoint import (
    load_optimizer_state,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from densitylab.train.files import atomic_write

SMALL = {"hidden_channels": 8, "n_residual_blocks": 1, "output_hidden": 8}


@pytest.mark.parametrize("name, config", [("pixelcnn", SMALL), ("realnvp", {"hidden_channels": 8})])
def test_round_trip_model_and_optimizer(tmp_path, name, config):
    model = build_model(name, (1, 4, 4), 4, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 4, (8, 1, 4, 4))
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        (-model.log_prob(x).mean()).backward()
        optimizer.step()
    save_checkpoint(tmp_path / "c.safetensors", model, optimizer, extra_header={"note": 1})
    loaded, header = model_from_checkpoint(tmp_path / "c.safetensors")
    assert header["model"] == name and header["note"] == 1
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    loaded.eval(), model.eval()
    gen = torch.Generator().manual_seed(0)
    gen2 = torch.Generator().manual_seed(0)
    assert torch.equal(model.log_prob(x, generator=gen), loaded.log_prob(x, generator=gen2))

    tensors, header = read_checkpoint(tmp_path / "c.safetensors")
    fresh = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    load_optimizer_state(fresh, tensors, header)
    saved, restored = optimizer.state_dict()["state"], fresh.state_dict()["state"]
    assert saved.keys() == restored.keys()
    for index in saved:
        assert torch.equal(saved[index]["exp_avg_sq"], restored[index]["exp_avg_sq"])
        assert float(saved[index]["step"]) == float(restored[index]["step"])


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path):
    model = build_model("pixelcnn", (1, 4, 4), 4, SMALL)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DensitylabError, match="corrupt"):
        read_checkpoint(path)
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(DensitylabError, match="corrupt"):
        read_checkpoint(tmp_path / "pickle.safetensors")
    with pytest.raises(DensitylabError, match="not found"):
        read_checkpoint(tmp_path / "none.safetensors")


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def failing(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
