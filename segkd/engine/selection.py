"""Which epoch a stage keeps as best.pt: ``stage.select.metric`` read from the epoch's metrics row
(``val/...``, ``select/...`` or ``last``) and compared with the best so far in ``select.mode``."""
from __future__ import annotations

from typing import Optional

from segkd.config.schema import StageCfg
from segkd.core.errors import ConfigError


def selection(stage: StageCfg, epoch: int, row: dict, best: Optional[float]) -> tuple[float, bool]:
    """(the epoch's value of the selection metric, whether it beats ``best``); ``last``: the
    latest validated epoch, chosen on no split. An unmeasured metric is a ConfigError naming the
    ones measured."""
    key = stage.select.metric
    if key == "last":
        return float(epoch + 1), True
    if key not in row:
        known = [k for k in row if k.startswith(("val/", "select/")) and not isinstance(row[k], list)]
        hint = " (select/... metrics need data.select_fraction)" if key.startswith("select/") else ""
        raise ConfigError(f"stage '{stage.name}': select.metric '{key}' is not measured; "
                          f"available: {', '.join(known + ['last'])}{hint}")
    value = row[key]
    return value, best is None or (value > best if stage.select.mode == "max" else value < best)
