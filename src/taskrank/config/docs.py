"""The reference page of the experiment file, ``docs/config.md``: an introduction, then one table
per section and system type, generated from the schema so that the two cannot drift apart
(``python -m taskrank.config > docs/config.md``; a test compares them)."""

from __future__ import annotations

import json
import re
from typing import Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..vocabulary import ALPHA_RANGE
from .experiment import ExperimentConfig
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
from .systems import SYSTEM_CLASSES, LabelFreeSettings

SCHEMA_MODELS: tuple[type[BaseModel], ...] = (
    ExperimentConfig,
    DatasetConfig,
    DevConfig,
    FirstStageConfig,
    ModelsConfig,
    ScoringConfig,
    FusionConfig,
    SignificanceConfig,
    ReportConfig,
    ExecutionConfig,
    *SYSTEM_CLASSES,
    LabelFreeSettings,
)


def _type_text(annotation: object) -> str:
    if get_origin(annotation) is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if "FirstStageSystem" in str(annotation):
        return "list of systems (below), told apart by `type`"
    text = str(annotation).replace("typing.", "")
    for name in ("str", "int", "float", "bool"):
        text = text.replace(f"<class '{name}'>", name)
    text = re.sub(r"(?:taskrank\.config(?:\.\w+)*|__main__)\.(\w+)", r"\1", text)
    return f"`{text}`".replace("|", "\\|")


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(section defaults)"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "**required**"
    return f"`{json.dumps(value)}`"


def _model_table(model: type[BaseModel]) -> str:
    rows = [f"### {model.__name__}", "", (model.__doc__ or "").strip(), ""]
    rows += ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, field in model.model_fields.items():
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_text(field.annotation)} | {_default_text(field)} | {desc} |")
    return "\n".join(rows)


def schema_markdown() -> str:
    """Markdown tables of every section and system type (the body of ``docs/config.md``)."""
    parts = [_model_table(m) for m in SCHEMA_MODELS]
    parts.append(f"α must lie in [{ALPHA_RANGE[0]}, {ALPHA_RANGE[1]}].")
    return "\n\n".join(parts) + "\n"


_PAGE_INTRO = """# The experiment file

`taskrank run EXPERIMENT.yaml` reads one YAML file that says everything about an experiment:
the dataset, the first stage, the model trio, the systems to compare, fusion, metrics,
significance testing and the results folder. Every section forbids unknown keys, so a
misspelt key is an error that names the file, the line and the key path:

    exp.yaml:14: systems[2].alpah: unknown key (valid keys: alpha, layers, mode, name, type)

Relative paths are relative to the directory `taskrank run` is started from. The results
folder receives a copy of the config with every default spelt out (`config.yaml`).

YAML anchors and aliases (`&name`, `*name`) are refused, with the line of the first one: an
alias repeats a node without repeating its text, so a file of a few hundred bytes can expand
to gigabytes. Write each value out.

A small example (the recipes under `configs/paper/` are complete ones):

```yaml
name: SciFact — monoT5-base + SciFive
output: results/scifact-t5-base
dataset: {path: scifact, split: test, dev: {split: train, fraction: 0.2}}
models:
  ranker: castorini/monot5-base-msmarco
  domain: razent/SciFive-base-Pubmed_PMC
  pretrained: google-t5/t5-base
  kind: monot5
systems:
  - {name: BM25, type: first-stage}
  - {name: monoT5, type: ranker}
  - {name: SciFive, type: domain}
  - {name: TA α=0.7, type: merge, alpha: 0.7}
  - {name: TA dev-tuned α, type: sweep}
  - {name: layers, type: ablation, alpha: 0.7}
```

Checked before any heavy work starts: the dataset and every checkpoint can be found, layer
indices exist in the ranker (its config's number of layers), system names are unique, and the
results folder is empty, new, or holds only what taskrank wrote there.

No metric looks deeper than the runs it is computed on. A re-ranked run, fused with the first
stage or not, holds the `scoring.top_k` re-ranked documents of each query; a first-stage row
holds `first_stage.k`. So every cutoff in `metrics`, `report.primary_metric` and (with tuned
fusion) `fusion.metric` must be at most `scoring.top_k` when a system re-ranks, and at most
`first_stage.k` otherwise. A deeper one (R@100 of top-30 runs would be R@30 under another
name, and P@100 would divide by documents that are not there) is refused when the config is
read, naming the metric, its cutoff and the key that limits it:

    exp.yaml:31: metrics: recall@100 looks at 100 documents per query, but scoring.top_k
      re-ranks only 30 documents per query; lower the cutoff to 30 or less, or raise scoring.top_k

(one line in the terminal). Metrics without a cutoff (`map`, `mrr`, which `taskrank evaluate`
accepts; the experiment file always asks for one) are computed on each run as it is.

The results folder (`output`) must be a folder of its own: one that holds files taskrank did
not write (the dataset, this file, notes) is refused, naming one of them, and nothing in it is
deleted, `--overwrite` or not. taskrank lists every file it writes there in
`.taskrank-manifest.json` (each before the file appears, so a killed run's files are listed
too); `--overwrite` replaces a different experiment's results by deleting only the listed
files, and keeps the step cache (`cache/`, or `cache_dir` wherever it lies in the folder; a
`cache_dir` that is the folder itself is refused). A resumed run never replaces a file the list
does not hold: one you put where the run writes is refused, naming it. A folder written by a
version without that list is not cleared: remove it yourself. While a run writes the folder it
holds a lock on it (`.taskrank.lock`): a second run on the same folder is refused at once,
naming the first one's pid.

Steps already computed are taken from the step cache (`cache_dir`); what it and the other
caches trust before they reuse a result is in [cache.md](cache.md).

This page's tables are generated from the schema (`python -m taskrank.config > docs/config.md`);
a test fails when they drift apart.

## Sections

"""


def config_page() -> str:
    """The whole ``docs/config.md`` page."""
    return _PAGE_INTRO + schema_markdown()
