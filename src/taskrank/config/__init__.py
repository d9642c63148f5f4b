"""The experiment file: pydantic models of the YAML that drives ``taskrank run``.

Every model forbids unknown keys, so a misspelt key is an error that names its path and,
when the config came from a file, its line::

    experiment.yaml:14: systems[2].alpah: unknown key (valid keys: alpha, layers, mode, name, type)

Example::

    config = load_config("configs/paper/scifact-t5-base.yaml")
    print([system.name for system in config.systems])

The package's rooms: :mod:`.sections` (dataset, first stage, models, scoring, fusion,
significance, report), :mod:`.systems` (the system types, and the ``Alpha`` and ``Layers``
types they share), :mod:`.experiment` (:class:`ExperimentConfig`, the checks across sections),
:mod:`.loading` (YAML with line numbers, error messages) and :mod:`.docs` (``docs/config.md``,
whose tables are :func:`schema_markdown`'s output).
"""

from __future__ import annotations

from ..vocabulary import ALPHA_RANGE, KINDS, Kind, Mode
from ..vocabulary import CORRECTIONS as _CORRECTION_TEXTS
from ..vocabulary import SIGNIFICANCE_TESTS as _TEST_TEXTS
from .docs import SCHEMA_MODELS, config_page, schema_markdown
from .experiment import ExperimentConfig
from .loading import dump_config, load_config, parse_config
from .sections import (
    DatasetConfig,
    DevConfig,
    ExecutionConfig,
    FirstStageConfig,
    FusionConfig,
    ModelsConfig,
    ReportConfig,
    ScoringConfig,
    SignificanceConfig,
)
from .systems import (
    SYSTEM_TYPES,
    AblationSystem,
    Alpha,
    DomainSystem,
    FirstStageSystem,
    LabelFreeSettings,
    Layers,
    MergeSystem,
    RankerSystem,
    SweepSystem,
    System,
    parse_layers,
)

#: The names of the significance tests and corrections the config accepts (the vocabulary's).
SIGNIFICANCE_TESTS: tuple[str, ...] = tuple(_TEST_TEXTS)
CORRECTIONS: tuple[str, ...] = tuple(_CORRECTION_TEXTS)

__all__ = [
    "ALPHA_RANGE",
    "CORRECTIONS",
    "KINDS",
    "SCHEMA_MODELS",
    "SIGNIFICANCE_TESTS",
    "SYSTEM_TYPES",
    "AblationSystem",
    "Alpha",
    "DatasetConfig",
    "DevConfig",
    "DomainSystem",
    "ExecutionConfig",
    "ExperimentConfig",
    "FirstStageConfig",
    "FirstStageSystem",
    "FusionConfig",
    "Kind",
    "LabelFreeSettings",
    "Layers",
    "MergeSystem",
    "Mode",
    "ModelsConfig",
    "RankerSystem",
    "ReportConfig",
    "ScoringConfig",
    "SignificanceConfig",
    "SweepSystem",
    "System",
    "config_page",
    "dump_config",
    "load_config",
    "parse_config",
    "parse_layers",
    "schema_markdown",
]
