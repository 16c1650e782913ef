"""Local model folders: what is converted, what is reused, what is refused (no download ever)."""

import pytest

from service.cli import main
from service.model_files import ModelNotAvailableError, ensure_gguf_model, resolve_model


def test_gguf_model_is_converted_once_into_a_folder_named_after_the_file(tmp_path, monkeypatch):
    gguf = tmp_path / "tiny-model.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    converted = []

    def fake_convert(path, out_dir):
        converted.append(path)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        return out_dir

    monkeypatch.setattr("service.model_files.convert_gguf", fake_convert)
    cache = tmp_path / "models"
    first = ensure_gguf_model(gguf, cache)
    assert first == cache / "tiny-model.Q4_K_M" and converted == [gguf]
    assert ensure_gguf_model(gguf, cache) == first and converted == [gguf]  # reused, not converted again
    assert resolve_model(str(first), cache) == first


def test_missing_files_and_folders_are_refused(tmp_path):
    with pytest.raises(ModelNotAvailableError):
        ensure_gguf_model(tmp_path / "absent.gguf", tmp_path)
    with pytest.raises(ModelNotAvailableError, match="never downloads"):
        resolve_model("HuggingFaceTB/SmolLM2-135M", tmp_path)


def test_prepare_model_command_prints_the_folder(tmp_path, monkeypatch, capsys):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    (tmp_path / "cache" / "m").mkdir(parents=True)
    (tmp_path / "cache" / "m" / "config.json").write_text("{}")
    assert main(["prepare-model", "--gguf", str(gguf), "--model-cache", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / "m")
