"""
Count a package's code lines: lines holding a Python token, without docstrings, comments and blank lines.

Usage: ``python benchmarks/code_lines.py sb3_tom`` (one line per file, then the total).
"""

from __future__ import annotations

import argparse
import ast
import io
import tokenize
from pathlib import Path

_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def code_lines(source: str) -> int:
    """Number of lines of ``source`` with code on them (docstrings, comments and blank lines left out)."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _SKIPPED:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("package", nargs="?", default="sb3_tom")
    args = parser.parse_args()
    total = 0
    for path in sorted(Path(args.package).rglob("*.py")):
        count = code_lines(path.read_text())
        total += count
        print(f"{count:5d} {path}")
    print(f"{total:5d} total")


if __name__ == "__main__":
    main()
