"""Config loading: bases, anchors, overrides, strict keys with suggestions."""
from __future__ import annotations

import pytest

from segkd.config.schema import apply_overrides, config_from_dict, load_config
from segkd.core.errors import ConfigError


def test_base_merge_anchors_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("data: {name: synthetic, batch_size: 4}\nseed: 3\n")
    (tmp_path / "c.yaml").write_text(
        "_base_: base.yaml\n_terms: &t [{loss: ce}, {loss: kd, weight: 2}]\n"
        "teacher: {checkpoint: t.pt}\nstages:\n  - {name: a, terms: *t}\n  - {name: b, terms: *t}\n")
    cfg = load_config(tmp_path / "c.yaml", ["stages.-1.epochs=5", "data.batch_size=8", "stages.0.terms.1.weight=3"])
    assert cfg.seed == 3 and cfg.data.batch_size == 8 and cfg.data.name == "synthetic"
    assert [s.epochs for s in cfg.stages] == [1, 5]
    assert cfg.stages[0].terms[1].weight == 3 and cfg.stages[1].terms[1].weight == 2


def test_unknown_key_names_path_and_suggests():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"stages": [{"optimizer": {"lrr": 1}}], "data": {"batchsize": 2}})
    msg = str(e.value)
    assert "stages.0.optimizer.lrr" in msg and "Did you mean: lr" in msg
    assert "data.batchsize" in msg and "batch_size" in msg


def test_wrong_type_and_bad_override():
    with pytest.raises(ConfigError, match="data.batch_size"):
        config_from_dict({"data": {"batch_size": "many"}})
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides({"stages": [{}]}, ["stages.3.epochs=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["stages"])
    with pytest.raises(ConfigError, match="not an index"):  # appending is a whole item, not a key
        apply_overrides({"stages": [{}]}, ["stages.1.epochs=1"])


def test_the_index_past_the_end_appends_a_stage():
    raw = {"stages": [{"name": "a", "epochs": 2}]}
    out = apply_overrides(raw, ["stages.1={name: b, epochs: 3, terms: [{loss: ce}]}", "stages.1.epochs=4"])
    assert out["stages"] == [{"name": "a", "epochs": 2}, {"name": "b", "epochs": 4, "terms": [{"loss": "ce"}]}]
    assert raw == {"stages": [{"name": "a", "epochs": 2}]}  # the input is not changed


def test_circular_base_and_missing_file(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_do_not_give_a_model_section_the_default_encoder(tmp_path):
    """With ``--set``, the file is merged over the defaults so that overrides can address them;
    the default model's encoder must not reach a model section that names an arch without one."""
    path = tmp_path / "c.yaml"
    path.write_text("model: {arch: my_registered_arch, kwargs: {width: 4}}\n")
    cfg = load_config(path, ["trainer.progress=false"])
    assert cfg.model.arch == "my_registered_arch" and cfg.model.encoder is None
    assert load_config(None, ["trainer.progress=false"]).model.encoder == "kd_resnet10"
