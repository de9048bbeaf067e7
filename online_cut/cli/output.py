"""Terminal output shared by the CLI verbs: user-facing errors without tracebacks, and stored
text shown as the characters it holds.

Responses, judgments and file names are data, not markup: `[/i]` or `[link=...]` in a model's
output must print as typed, and a control character (an escape sequence, a carriage return,
a bidi override) must show as an escape instead of acting on the terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)

# C0 controls but newline and tab, DEL and C1 controls, line/paragraph separators, bidi controls.
_ACTING_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with every character that acts on a terminal written as its escape (`\\x1b`, `\\u2028`)."""
    return _ACTING_CHARACTERS.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) <= 0xFF else f"\\u{ord(m[0]):04x}", text)


def visible_json(text: str) -> str:
    """JSON text with those characters as JSON escapes (`\\u001b`): still valid JSON, decoding to the same data."""
    return _ACTING_CHARACTERS.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def as_text(text: str) -> str:
    """Data for a rich `print`: markup escaped, acting characters visible."""
    return escape(visible(text))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a user-facing error and return the exit to raise: `raise fail("...")`."""
    err.print(f"[bold red]error:[/] {as_text(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def errors_named(*errors: type[Exception]) -> Iterator[None]:
    """Turn the user-facing `errors` raised in the block into `fail` with their message."""
    try:
        yield
    except errors as exc:
        raise fail(str(exc)) from None
