"""LaTeX text: what a table cell shows, escaped (the report and ``taskrank evaluate --format latex``)."""

from __future__ import annotations

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"$<$", ">": r"$>$"}  # fmt: skip


def latex_escape(text: str) -> str:
    """``text`` safe in a LaTeX table cell: LaTeX's special characters escaped (every LaTeX
    table of taskrank, the report's and ``taskrank evaluate --format latex``'s, uses it).

    >>> print(latex_escape("run_1 ~ 50%"))
    run\\_1 \\textasciitilde{} 50\\%
    """
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


__all__ = ["latex_escape"]
