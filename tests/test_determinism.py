"""trainer.deterministic: deterministic torch kernels, cuDNN flags; off restores the defaults."""
from __future__ import annotations

import pytest
import torch

from segkd.config.schema import TrainerCfg, config_from_dict
from segkd.core.errors import ConfigError
from segkd.engine.fabric import make_fabric


@pytest.fixture
def restore_torch_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]


def test_deterministic_sets_and_clears_torch_flags(restore_torch_flags) -> None:
    import os

    torch.backends.cudnn.benchmark = True
    make_fabric(TrainerCfg(accelerator="cpu", deterministic=True))
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # no deterministic kernel: warn
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    make_fabric(TrainerCfg(accelerator="cpu", deterministic=False))  # a later run in-process
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


def test_removed_connector_warmup_key() -> None:
    cfg = config_from_dict({"stages": [{"name": "a", "connector_warmup_epochs": 0}]})
    assert cfg.stages[0].name == "a"  # configs saved before the removal still load
    with pytest.raises(ConfigError, match="connector_warmup_epochs was removed"):
        config_from_dict({"stages": [{"connector_warmup_epochs": 1}]})
