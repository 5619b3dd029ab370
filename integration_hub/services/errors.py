"""Errors the services raise for people: each message says what is wrong and what to do."""

from __future__ import annotations


class ServiceError(Exception):
    """Base for errors a page or the CLI shows as they are."""


class NotFound(ServiceError):
    pass


class Forbidden(ServiceError):
    pass


class Unauthorized(ServiceError):
    """No valid sign-in: a wrong password, an expired session or a token we cannot verify."""


class TooManyAttempts(ServiceError):
    """Sign-in is locked for a while after repeated failures."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class InvalidInput(ServiceError):
    """Bad input; ``problems`` lists every issue so it can be fixed in one round."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class WarningsNotAcknowledged(ServiceError):
    """Saving would keep warnings nobody confirmed; nothing was saved."""

    def __init__(self, warnings: list[str]) -> None:
        super().__init__(
            f"{len(warnings)} warning(s) need an explicit acknowledgement before saving"
        )
        self.warnings = warnings
