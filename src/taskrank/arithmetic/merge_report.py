"""The record of a merge, rendered as a model card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import __version__

if TYPE_CHECKING:
    from .selection import LayerSelection
    from .vector import TaskVector


def recipe_text(alpha: float, vector: TaskVector, named_pair: bool = False) -> str:
    """The formula of a merge as its card prints it: ``θ_ranker + α·(θ_domain − θ_pretrained)``
    for the paper's one pair (``named_pair``, coefficient 1), else ``θ_ranker + α·[…]`` with
    the vector's terms, by role for the named pair and by checkpoint name otherwise."""
    if named_pair and len(vector.terms) == 1 and vector.terms[0].coef == 1.0:
        return f"θ_ranker + {alpha:g}·(θ_domain − θ_pretrained)"
    roles = ("domain", "pretrained") if named_pair else ()
    return f"θ_ranker + {alpha:g}·[{vector.describe(roles)}]"


@dataclass
class MergeReport:
    """What a merge did, renderable as a model card."""

    recipe: str
    alpha: list[float]
    selection: dict[str, Any]
    inputs: dict[str, Any]
    dtype: str
    vocab_policy: str
    merged: list[str]
    unchanged: dict[str, str]  # tensor -> reason
    vector_only: list[str]  # task-vector tensors with no counterpart in the base
    unpaired: list[str] = field(default_factory=list)  # fine-tuned/pretrained tensors outside the vector
    taskrank_version: str = __version__
    files: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        alpha: float,
        vector: TaskVector,
        selection: LayerSelection,
        *,
        dtype: str,
        vector_only: list[str],
        named_pair: bool = False,
    ) -> MergeReport:
        """The report of a merge of ``θ_ranker + alpha·vector`` about to run: the recipe and
        settings, with no tensor counted yet and no input recorded (the merge adds both).
        ``named_pair``: the vector is the paper's θ_domain − θ_pretrained (see :func:`recipe_text`)."""
        return cls(
            recipe=recipe_text(alpha, vector, named_pair),
            alpha=[alpha * t.coef for t in vector.terms],
            selection={**selection.to_dict(), "description": selection.describe()},
            inputs={},
            dtype=dtype,
            vocab_policy=vector.vocab_policy,
            merged=[],
            unchanged={},
            vector_only=vector_only,
            unpaired=vector.unpaired(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "alpha": self.alpha,
            "selection": self.selection,
            "inputs": self.inputs,
            "dtype": self.dtype,
            "vocab_policy": self.vocab_policy,
            "merged_tensors": len(self.merged),
            "unchanged_tensors": self.unchanged,
            "vector_tensors_without_counterpart": self.vector_only,
            "unpaired_tensors": self.unpaired,
            "taskrank_version": self.taskrank_version,
        }

    def summary(self) -> str:
        """One line of counts; the tensors behind each count are :meth:`details` (and the card)."""
        return (
            f"{self.recipe}: {len(self.merged)} tensors merged, {len(self.unchanged)} unchanged, "
            f"{len(self.vector_only)} vector tensors without counterpart in the base, "
            f"{len(self.unpaired)} tensors outside the task vector; dtype {self.dtype}"
        )

    def details(self) -> list[str]:
        """The tensors the card lists, one line each: left unchanged (with the reason), vector
        tensors with no counterpart in the base, and tensors outside the task vector (a fine-tuned
        or pretrained tensor with no counterpart in the other, e.g. an MLM head; "checkpoint: name")."""
        return (
            [f"unchanged: {name} ({reason})" for name, reason in self.unchanged.items()]
            + [f"not applied (no counterpart in the base): {name}" for name in self.vector_only]
            + [f"outside the task vector: {name}" for name in self.unpaired]
        )

    def to_markdown(self) -> str:
        """A model card (README.md with Hugging Face front matter) recording the recipe."""
        bases = []
        for role in ("ranker", "domain", "pretrained"):
            info = self.inputs.get(role)
            if info and info.get("hub_id"):
                bases.append(info["hub_id"])
        lines = ["---", "library_name: transformers", "tags:", "- taskrank", "- task-arithmetic", "- merge"]
        if bases:
            lines += ["base_model:", *[f"- {b}" for b in bases]]
        lines += ["---", "", "# Task-arithmetic merge made with taskrank", ""]
        lines += [f"    {self.recipe}", ""]
        lines += [
            "Method: Braga et al., *Investigating Task Arithmetic for Zero-Shot Information Retrieval*, "
            "SIGIR 2025 (arXiv 2505.00649).",
            "",
            "| setting | value |",
            "|---|---|",
            f"| α | {', '.join(f'{a:g}' for a in self.alpha)} |",
            f"| selection | {self.selection.get('description', 'all tensors')} |",
            f"| output dtype | {self.dtype} |",
            f"| vocabulary policy | {self.vocab_policy} |",
            f"| tensors merged | {len(self.merged)} |",
            f"| tensors left unchanged | {len(self.unchanged)} |",
            f"| taskrank version | {self.taskrank_version} |",
            "",
            "## Inputs",
            "",
            "| role | checkpoint | identity |",
            "|---|---|---|",
        ]
        for role, info in self.inputs.items():
            ident = (
                f"revision `{info['revision']}`"
                if info.get("revision")
                else (f"sha256 `{info['sha256']}`" if info.get("sha256") else info.get("format", ""))
            )
            lines.append(f"| {role} | `{info.get('hub_id') or info.get('ref')}` | {ident} |")
        lines += ["", "## Tensors left unchanged", ""]
        if self.unchanged:
            lines += ["| tensor | reason |", "|---|---|"]
            lines += [f"| `{k}` | {v} |" for k, v in self.unchanged.items()]
        else:
            lines.append("None: every tensor of the base received the task vector.")
        if self.vector_only:
            lines += ["", "## Task-vector tensors with no counterpart in the base (not applied)", ""]
            lines += [f"- `{k}`" for k in self.vector_only]
        if self.unpaired:
            lines += [
                "",
                "## Tensors outside the task vector (no counterpart between fine-tune and pretrained)",
                "",
            ]
            lines += [f"- `{k}`" for k in self.unpaired]
        return "\n".join(lines) + "\n"


@dataclass
class MergeResult:
    """Outcome of :func:`merge`: the report, and the output path or the merged state dict."""

    report: MergeReport
    path: Path | None = None
    state_dict: dict[str, torch.Tensor] | None = None
