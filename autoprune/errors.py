"""The one exception type that carries a message meant for the user.

Anything raised as :class:`UserError` is bad input (a flag, a file, a model that does
not fit the data): the CLI prints its message as one sentence and exits with status 2,
without a traceback. Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input, explained in one sentence that says what was wrong and what to do."""
