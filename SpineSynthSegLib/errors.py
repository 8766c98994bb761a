"""Exceptions shared by the library and the command line.

`InputError` marks bad user input (a file, a parameter): the CLI maps it to exit code 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: names the offending file or parameter and the problem."""

    def __init__(self, problem: str, source: str | None = None) -> None:
        self.problem = problem
        self.source = source
        super().__init__(f"{source}: {problem}" if source else problem)
