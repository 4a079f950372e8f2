"""How a command reports bad input: one red `error:` line. It is never wrapped at the terminal's width, so a path
in it stays whole (copyable, and greppable in a test's captured output), and the message is printed as written,
not read as rich markup (which dropped the `[local]` of "pip install 'eigenloop[local]'")."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

_stdout = Console()
_stderr = Console(stderr=True)


def print_error(message: str, *, stderr: bool = False) -> None:
    (_stderr if stderr else _stdout).print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)


def fail(message: str, *, code: int = 1, stderr: bool = False) -> typer.Exit:
    """Print `message` as an error; the caller raises the returned exit (status `code`)."""
    print_error(message, stderr=stderr)
    return typer.Exit(code=code)
