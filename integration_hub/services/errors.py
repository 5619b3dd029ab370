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


class RunFailed(ServiceError):
    """A run was started and did not finish; it is recorded (``run_id``) with the same reason,
    and ``failure`` says what kind of stop it was (:class:`integration_hub.models.RunFailure`):
    the CLI's exit code and the pages' wording follow from it."""

    def __init__(self, run_id: int, failure: str, reason: str) -> None:
        super().__init__(reason)
        self.run_id = run_id
        self.failure = failure
