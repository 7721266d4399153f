"""The run configuration: its schema (``schema``: typed, strict sections with suggestions), YAML
loading with ``_base_`` and ``--set`` overrides (``loading``), and the optimiser and learning-rate
schedule registries, each schedule with its own config type (``optimizers``, ``schedules``)."""
