"""Choosing α from label-free signals, with a guard that keeps α = 0 unless another α is clearly better.

For each strategy, every α gets the mean of the strategy's per-query values (over the queries
valued at every α, so the means compare like with like). The α with the highest mean is chosen,
unless the sweep has α = 0 and the chosen α does not beat it significantly: a paired Student's t
test over the per-query values, two-sided, at the ``guard`` level. Then α = 0 is chosen, meaning
"do not apply the domain vector", since a vector that cannot be shown to help may hurt. Ties go
to α = 0, then to the smaller |α|.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import DataError
from ..vocabulary import DEFAULT_LABEL_FREE_STRATEGY
from .strategies import STRATEGIES, Lists, strategy

#: The strategy that chooses when none is named: the one with the lowest regret in
#: benchmarks/label-free.md (dev queries of Cranfield and the demo data).
DEFAULT_STRATEGY: str = DEFAULT_LABEL_FREE_STRATEGY
#: The p-value under which an α ≠ 0 must beat α = 0 to be chosen.
DEFAULT_GUARD = 0.05


@dataclass
class StrategyOutcome:
    """One strategy's mean signal per α (None where it could not be computed) and its choice."""

    strategy: str
    signal: list[float | None]
    alpha: float | None
    p_value: float | None
    reason: str

    def record(self) -> dict[str, object]:
        """As ``results.json`` records it."""
        return {
            "signal": self.signal,
            "alpha": self.alpha,
            "p_value": self.p_value,
            "reason": self.reason,
        }


@dataclass
class LabelFreeChoice:
    """Every strategy's signal and choice over a sweep's α values, and which strategy decides."""

    alphas: list[float]
    strategy: str
    guard: float | None
    outcomes: dict[str, StrategyOutcome]
    pseudo: str | None = None  # the pseudo-queries, described (None when none were made)
    notes: list[str] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        """The α the deciding strategy chose."""
        chosen = self.outcomes[self.strategy].alpha
        if chosen is None:
            raise ValueError(f"the {self.strategy} strategy could not be computed: {self.notes}")
        return chosen

    @property
    def index(self) -> int:
        """The position of :attr:`alpha` in :attr:`alphas`."""
        return self.alphas.index(self.alpha)

    def words(self) -> str:
        """What was chosen and why, for the report."""
        outcome = self.outcomes[self.strategy]
        text = f"chosen without labels by {self.strategy}: {outcome.reason}"
        return text

    def record(self) -> dict[str, object]:
        """As ``results.json`` records it (the sweep's ``label_free``)."""
        return {
            "strategy": self.strategy,
            "alpha": self.outcomes[self.strategy].alpha,
            "guard": self.guard,
            "pseudo_queries": self.pseudo,
            "strategies": {name: outcome.record() for name, outcome in self.outcomes.items()},
            "notes": list(self.notes),
        }


def _common(values: Sequence[dict[str, float]]) -> list[str]:
    shared = set(values[0])
    for per_query in values[1:]:
        shared &= set(per_query)
    return sorted(shared)


def choose(
    alphas: Sequence[float], values: Sequence[dict[str, float]], guard: float | None = DEFAULT_GUARD
) -> StrategyOutcome:
    """The α whose per-query ``values`` have the highest mean, kept to α = 0 by the guard.

    >>> choose([0.0, 0.5], [{"q1": 0.2, "q2": 0.3}, {"q1": 0.9, "q2": 0.8}], guard=None).alpha
    0.5
    """
    from ..evaluation import paired_test

    if len(alphas) != len(values) or not alphas:
        raise ValueError(f"{len(alphas)} α values but {len(values)} signals")
    queries = _common(values)
    if not queries:
        return StrategyOutcome("", [None] * len(alphas), None, None, "no query was valued at every α")
    columns = [[per_query[q] for q in queries] for per_query in values]
    means = [sum(column) / len(column) for column in columns]
    # ties: α = 0 first, then the smaller |α|, then the earlier one
    best = max(range(len(alphas)), key=lambda i: (means[i], alphas[i] == 0, -abs(alphas[i]), -i))
    signal: list[float | None] = [float(m) for m in means]
    if 0.0 not in alphas:
        return StrategyOutcome("", signal, alphas[best], None, f"α = {alphas[best]:g} scores highest")
    zero = list(alphas).index(0.0)
    if best == zero:
        return StrategyOutcome(
            "", signal, 0.0, None, "α = 0 scores highest: the domain vector is not applied"
        )
    p = paired_test(columns[best], columns[zero], "student")
    versus = f"{means[best]:.4f} against {means[zero]:.4f} at α = 0, p = {p:.3g}"
    if guard is not None and p >= guard:
        reason = (
            f"α = {alphas[best]:g} scores highest but not significantly above α = 0 ({versus} ≥ {guard:g}): "
            "the domain vector is not applied"
        )
        return StrategyOutcome("", signal, 0.0, p, reason)
    return StrategyOutcome("", signal, alphas[best], p, f"α = {alphas[best]:g} scores highest ({versus})")


def label_free_choice(
    alphas: Sequence[float],
    lists: Sequence[Lists],
    *,
    strategy_name: str = DEFAULT_STRATEGY,
    guard: float | None = DEFAULT_GUARD,
    pseudo: str | None = None,
) -> LabelFreeChoice:
    """Every strategy's signal and choice over ``alphas`` (``lists[i]`` holds α_i's re-ranked
    lists); ``strategy_name`` decides. A strategy whose inputs are missing (no pseudo-queries)
    gets no signal, and a note says why; a :class:`DataError` when it is the one that decides."""
    if len(alphas) != len(lists):
        raise ValueError(f"{len(alphas)} α values but {len(lists)} sets of re-ranked lists")
    strategy(strategy_name)  # a ValueError naming the valid ones
    outcomes: dict[str, StrategyOutcome] = {}
    notes: list[str] = []
    for name, cls in STRATEGIES.items():
        if cls.needs_pseudo and any(item.pseudo is None or not item.pseudo_sources for item in lists):
            notes.append(f"{name}: no pseudo-queries were scored")
            outcomes[name] = StrategyOutcome(
                name, [None] * len(alphas), None, None, "no pseudo-queries were scored"
            )
            continue
        values = [cls().per_query(item) for item in lists]
        outcome = choose(list(alphas), values, guard)
        outcome.strategy = name
        outcomes[name] = outcome
    if outcomes[strategy_name].alpha is None:
        why = outcomes[strategy_name].reason
        raise DataError(f"label-free strategy {strategy_name!r} could not be computed ({why})")
    return LabelFreeChoice(list(alphas), strategy_name, guard, outcomes, pseudo, notes)


__all__ = [
    "DEFAULT_GUARD",
    "DEFAULT_STRATEGY",
    "LabelFreeChoice",
    "StrategyOutcome",
    "choose",
    "label_free_choice",
]
