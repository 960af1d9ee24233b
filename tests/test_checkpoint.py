import pytest
import torch

from hwsim.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, save_checkpoint
from hwsim.errors import CheckpointError


def test_round_trip_is_exact(cnn_bn_digits, tmp_path):
    path, result = cnn_bn_digits
    ckpt = load_checkpoint(path)
    assert (ckpt.arch, ckpt.bn, ckpt.dataset, ckpt.kind) == ("cnn", True, "digits", "digital")
    assert (ckpt.num_classes, ckpt.in_channels, ckpt.input_size) == (10, 1, 8)
    assert ckpt.train_config["epochs"] == 3 and ckpt.seed == 0
    assert ckpt.test_accuracy == result.test_accuracy
    original = result.model.state_dict()
    assert all(torch.equal(original[k].cpu(), ckpt.state_dict[k]) for k in original)
    again = tmp_path / "again.pt"
    save_checkpoint(ckpt, again)
    reread = load_checkpoint(again)
    assert all(torch.equal(reread.state_dict[k], ckpt.state_dict[k]) for k in original)
    raw = torch.load(again, weights_only=True)
    assert raw["format"] == FORMAT and raw["version"] == FORMAT_VERSION


def test_plain_state_dict_needs_arch_and_dataset(cnn_nobn_digits, tmp_path):
    path, result = cnn_nobn_digits
    plain = tmp_path / "plain.pt"
    torch.save(result.model.state_dict(), plain)
    with pytest.raises(CheckpointError,
                       match="plain state_dict: name its architecture with --arch"):
        load_checkpoint(plain)
    ckpt = load_checkpoint(plain, arch="cnn", dataset="digits")
    assert ckpt.bn is False and ckpt.num_classes == 10
    with pytest.raises(CheckpointError, match="weights do not match architecture resnet20"):
        load_checkpoint(plain, arch="resnet20", dataset="digits")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(cnn_bn_digits, tmp_path):
    path, _ = cnn_bn_digits
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="cut.pt: truncated or corrupt"):
        load_checkpoint(cut)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt: "):
        load_checkpoint(text)
    other = tmp_path / "list.pt"
    torch.save([1, 2, 3], other)
    with pytest.raises(CheckpointError, match="not an hwsim checkpoint or a state_dict"):
        load_checkpoint(other)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused: it holds pickled Python objects"):
        load_checkpoint(evil)
    assert "this must never run" not in capsys.readouterr().out


def test_atomic_save_leaves_no_partial_file(cnn_bn_digits, tmp_path, monkeypatch):
    path, _ = cnn_bn_digits
    ckpt = load_checkpoint(path)
    target = tmp_path / "out.pt"
    save_checkpoint(ckpt, target)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(ckpt, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]


def test_bytes_are_the_file_and_read_back_exactly(cnn_bn_digits, tmp_path):
    from hwsim.checkpoint import checkpoint_from_bytes, checkpoint_to_bytes

    path, _ = cnn_bn_digits
    ckpt = load_checkpoint(path)
    data = checkpoint_to_bytes(ckpt)
    save_checkpoint(ckpt, tmp_path / "saved.pt")
    assert data == (tmp_path / "saved.pt").read_bytes()  # what travels is what is saved
    back = checkpoint_from_bytes(data)
    assert back.train_config == ckpt.train_config
    assert all(torch.equal(back.state_dict[k], v) for k, v in ckpt.state_dict.items())
    with pytest.raises(CheckpointError, match="model.pt: truncated or corrupt"):
        checkpoint_from_bytes(data[:2000], "model.pt")
    with pytest.raises(CheckpointError, match="model.pt: not an hwsim checkpoint"):
        checkpoint_from_bytes(_plain_bytes(ckpt), "model.pt")


def _plain_bytes(ckpt) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(ckpt.state_dict, buffer)
    return buffer.getvalue()
