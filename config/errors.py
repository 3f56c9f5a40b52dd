"""The one error type of bad configuration, and the helpers that keep its messages to one line."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any

from pydantic_core import PydanticCustomError

# The pydantic error type of a check whose message is already a whole, user-facing line.
WHOLE_LINE = "cxrlab"


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class DetailWarning(UserWarning):
    """A warning about a detail of a result (an eigen-heatmap skipped for an empty class): the
    console shows it with --verbose; the run's tables record it either way."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type's name when the message is empty), for
    one-line reports of errors raised by libraries with multi-line messages."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


_REPR = reprlib.Repr()  # bounded: it never walks more of a value than it shows
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 120, 120
ECHO_LIMIT = 200  # characters of a value an error message repeats back


def shown(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)` for an error message, cut to `limit` characters without walking a huge value."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `options`, or '' when none is close."""
    close = difflib.get_close_matches(name[:ECHO_LIMIT], list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def invalid(message: str) -> PydanticCustomError:
    """An error a schema check raises with its whole message (it names the keys itself)."""
    return PydanticCustomError(WHOLE_LINE, "{line}", {"line": message})
