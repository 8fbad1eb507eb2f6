"""Domain errors; `api/errors.py` maps each to one problem+json answer."""

from __future__ import annotations


class DomainError(Exception):
    """Base of the errors a caller can cause; the message never holds personal data."""

    status = 400
    title = "Bad request"
    type_slug = "bad-request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DomainError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class Conflict(DomainError):
    """The step is not possible in the referral's current state."""

    status = 409
    title = "Conflict"
    type_slug = "conflict"


class KeyInUse(Conflict):
    """Another request with the same Idempotency-Key is still being served: try again
    shortly (a request that died is taken over after a short lease)."""

    title = "Request in progress"
    type_slug = "idempotency-key-in-use"


class StepRefused(Conflict):
    """A lifecycle step refused in the referral's current state (e.g. lost to a withdrawal)."""

    title = "Step refused"
    type_slug = "step-refused"
    # What a caller reads who may not see the stage: the same words whatever it is.
    UNSEEN = "this step is not possible on this referral now"


class Unprocessable(DomainError):
    status = 422
    title = "Unprocessable request"
    type_slug = "unprocessable"


class Unauthenticated(DomainError):
    status = 401
    title = "Unauthenticated"
    type_slug = "unauthenticated"


class Unavailable(DomainError):
    status = 503
    title = "Service unavailable"
    type_slug = "unavailable"


class PreconditionRequired(DomainError):
    """A request that must carry a precondition (e.g. an Idempotency-Key) lacks it."""

    status = 428
    title = "Precondition required"
    type_slug = "precondition-required"
