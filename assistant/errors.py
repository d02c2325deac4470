"""Errors a user can act on: each message says what happened and how to fix it."""

from __future__ import annotations


class AssistantError(Exception):
    """Base class; the CLI prints the message and exits non-zero, the UI shows it."""

    exit_code = 1


class ConfigError(AssistantError):
    """A setting is invalid."""

    exit_code = 2


class CorpusError(AssistantError):
    """A corpus file cannot be used (missing, empty, binary, undecodable, unsupported)."""

    exit_code = 2


class FileError(CorpusError):
    """One file cannot be indexed; a build skips it and lists `reason` (what is wrong and the fix) by its name."""

    def __init__(self, path: object, reason: str):
        from .names import printable

        super().__init__(f"{printable(str(path))}: {reason}")
        self.path = str(path)
        self.reason = reason


class CorpusWriteError(AssistantError):
    """Files cannot be copied into the corpus folder (full disk, read-only); the corpus and index are unchanged."""

    exit_code = 3


class IndexNotFoundError(AssistantError):
    """No index at the given directory."""

    exit_code = 3


class IndexCorruptError(AssistantError):
    """An index file is damaged or inconsistent."""

    exit_code = 3


class IndexWriteError(AssistantError):
    """The index folder cannot be written (read-only, full disk); the previous index is unchanged."""

    exit_code = 3


class IndexBusyError(AssistantError):
    """Another build holds the index lock."""

    exit_code = 3


class ModelMismatchError(AssistantError):
    """The index was built with another embedding model than the one configured."""

    exit_code = 3


class ModelNotAvailableError(AssistantError):
    """The embedding model cannot be loaded offline."""

    exit_code = 4


class InputError(AssistantError):
    """A request field out of its limits; `field` names it (question, k, history, answerer)."""

    exit_code = 2

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class QuestionError(InputError):
    """A question that cannot be asked (empty, too long, nothing to search)."""

    def __init__(self, message: str):
        super().__init__("question", message)


class EvalError(AssistantError):
    """The eval question file is invalid."""

    exit_code = 2


class UnknownNameError(AssistantError):
    """A registry lookup with a name that does not exist."""

    exit_code = 2
