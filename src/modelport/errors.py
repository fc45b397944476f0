"""Domain errors. Transports map them to their status codes (``api/errors.py`` for HTTP).

    ModelportError
    ├── InvalidInput            the request does not match the model or the protocol
    │   └── PayloadTooLarge     the body or a tensor exceeds a configured limit
    ├── Unauthenticated         no credentials, or credentials that are not valid
    ├── Forbidden               valid credentials without the scope the operation needs
    ├── NotFound
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   ├── FeatureViewNotFound
    │   ├── ProductNotFound
    │   └── ExperimentNotFound
    ├── Conflict                the operation contradicts stored state
    │   ├── StorageQuotaExceeded  a write would take a tenant's stored data past its cap
    │   └── IdempotencyKeyInUse   a request with the same Idempotency-Key is still running
    ├── PreconditionFailed      If-Match named a version that is not the current one
    ├── IdempotencyKeyReused    an Idempotency-Key sent again with another request
    ├── TooManyRequests         a tenant quota (rate, concurrency) is exhausted
    ├── Unavailable             retry later
    │   ├── ModelNotReady       the version is loading, failed or unloaded
    │   ├── QueueFull           the version's batch queue is at ``max_queue_size``
    │   ├── FeatureStoreUnavailable  the online feature store did not answer in time
    │   └── RateLimiterUnavailable   the shared rate limiter did not answer (requests pass)
    ├── DeadlineExceeded        the request waited longer than its deadline
    │   └── ComputeTimeout      its batch ran past the version's ``compute_timeout_s``
    ├── ArtifactError           an artifact is missing or its checksum does not match
    └── InferenceFailed         the runtime raised while computing a batch

Messages are written for the person who sent the request: they say what was wrong and what
would be accepted instead. They never carry secrets or stack traces.
"""

from __future__ import annotations


class ModelportError(Exception):
    """Root of every error modelport raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ModelportError):
    pass


class PayloadTooLarge(InvalidInput):
    pass


class HeadersTooLarge(InvalidInput):
    pass


class Unauthenticated(ModelportError):
    pass


class Forbidden(ModelportError):
    pass


class NotFound(ModelportError):
    pass


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        super().__init__(f"model '{model}' is not registered")
        self.model = model


class VersionNotFound(NotFound):
    def __init__(self, model: str, version: str) -> None:
        super().__init__(f"model '{model}' has no version '{version}'")
        self.model = model
        self.version = version


class FeatureViewNotFound(NotFound):
    def __init__(self, view: str, version: int | None = None) -> None:
        what = f"feature view '{view}'" + ("" if version is None else f" version {version}")
        super().__init__(f"{what} does not exist; PUT /v1/features/views/{view} defines it")
        self.view = view
        self.version = version


class ProductNotFound(NotFound):
    def __init__(self, product: str) -> None:
        super().__init__(f"product '{product}' is not in the catalog")
        self.product = product


class ExperimentNotFound(NotFound):
    def __init__(self, experiment: str) -> None:
        super().__init__(f"experiment '{experiment}' does not exist")
        self.experiment = experiment


class Conflict(ModelportError):
    pass


class IdempotencyKeyInUse(Conflict):
    """The first request with this key has not answered yet; retrying later replays it."""


class PreconditionFailed(ModelportError):
    """A conditional write (``If-Match``) found another version than the one it named."""


class IdempotencyKeyReused(ModelportError):
    """An ``Idempotency-Key`` already answered a different request (method, path or body)."""


class StorageQuotaExceeded(Conflict):
    """The refused rows were not stored; the message says whether earlier ones were."""


class TooManyRequests(ModelportError):
    def __init__(
        self, message: str, *, retry_after_s: float, limit: int, remaining: int, reset_s: float
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s


class Unavailable(ModelportError):
    retry_after_s: float = 1.0


class ModelNotReady(Unavailable):
    pass


class QueueFull(Unavailable):
    def __init__(self, target: str, limit: int, retry_after_s: float) -> None:
        super().__init__(
            f"{target} already has {limit} rows queued (its max_queue_size); "
            f"retry after {retry_after_s:g} s or raise max_queue_size"
        )
        self.retry_after_s = retry_after_s


class FeatureStoreUnavailable(Unavailable):
    pass


class RateLimiterUnavailable(Unavailable):
    """Never reaches a caller: the quota gate lets the request through and logs it."""


class DeadlineExceeded(ModelportError):
    pass


class ComputeTimeout(DeadlineExceeded):
    """The runtime call of a batch did not return within the version's compute timeout."""


class ArtifactError(ModelportError):
    pass


class InferenceFailed(ModelportError):
    pass
