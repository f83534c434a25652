"""Errors a user can cause or fix. The CLI prints them as one line, with no traceback."""


class LLMLabelError(Exception):
    """Base class: the message is a single line that says what is wrong and how to fix it."""

    exit_code = 2


class ConfigError(LLMLabelError):
    pass


class InputError(LLMLabelError):
    pass


class JudgeError(LLMLabelError):
    """A judge cannot be used (bad key, unknown model, endpoint down): the run stops, finished rows are kept."""

    exit_code = 1


class BudgetExhausted(LLMLabelError):
    """--max-cost or --max-requests was reached; the run stops cleanly and a rerun continues."""

    exit_code = 3


class OutputError(LLMLabelError):
    """An output or its part file cannot be written (disk full, a directory in the way): rows already written stay."""

    exit_code = 1


class CacheError(LLMLabelError):
    """The response cache cannot be read or written (disk full, read-only, its Redis server gone). A run keeps
    the answers it received in its rows, starts no new row, and stops with this line; a rerun continues."""

    exit_code = 1
