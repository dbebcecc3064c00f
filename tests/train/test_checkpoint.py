import errno

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
from densitylab.train.files import NoSpaceError, atomic_write

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


def test_model_from_checkpoint_takes_a_run_directory_and_returns_eval_mode(tmp_path):
    model = build_model("pixelcnn", (1, 4, 4), 4, SMALL)
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.safetensors", model, extra_header={"dataset": {"name": "mine"}})
    loaded, header = model_from_checkpoint(run)  # only the checkpoint: it is the fallback
    assert not loaded.training and header["dataset"]["name"] == "mine"
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_checkpoint(run / "model.safetensors", model)
    preferred, _ = model_from_checkpoint(run)  # model.safetensors first
    assert torch.equal(next(preferred.parameters()), next(model.parameters()))
    with pytest.raises(DensitylabError, match="does not exist"):
        model_from_checkpoint(tmp_path / "none")


def test_every_tensor_byte_is_checksummed(tmp_path):
    model = build_model("pixelcnn", (1, 4, 4), 4, SMALL)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model)
    clean = path.read_bytes()
    header_end = 8 + int.from_bytes(clean[:8], "little")
    for offset in range(header_end, len(clean), 97):  # one flipped bit anywhere in the data
        damaged = bytearray(clean)
        damaged[offset] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(DensitylabError, match="checksum of tensor model"):
            read_checkpoint(path)


def test_a_full_disk_keeps_the_old_file_and_says_so(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def full(tmp):
        with open(tmp, "wb") as handle:
            handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(NoSpaceError, match="no space left on the device writing"):
        atomic_write(path, full)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
