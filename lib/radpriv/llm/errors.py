"""Backend exceptions, in a module of their own so that :mod:`radpriv.llm.http` and
:mod:`radpriv.llm.backends` can both use them without an import cycle (``backends`` re-exports them).

Every exception carries a ``reason``, the failure category the engine records per report::

    except BackendError as exc:
        failure = {"reason": exc.reason, "detail": str(exc)}

``BackendError.reason``      ``"backend_error"`` (any other backend failure)
``BackendTimeout.reason``    ``"timeout"`` (no complete answer before the per-report deadline)
``TransportError.reason``    one of :data:`TRANSPORT_REASONS` (a fault talking to a model server)
"""

from __future__ import annotations

#: reasons a :class:`TransportError` carries
TRANSPORT_REASONS = frozenset({"connection_error", "http_error", "bad_reply", "redirect_refused"})


class BackendError(RuntimeError):
    """A backend failed to produce an answer (recorded as a failure with ``reason``)."""

    reason: str = "backend_error"


class BackendTimeout(BackendError):
    """No complete answer before the deadline."""

    reason: str = "timeout"


class TransportError(BackendError):
    """A fault talking to a model server over HTTP.

    ``reason``: ``connection_error`` (refused, reset, closed early, truncated reply, proxy failure),
    ``http_error`` (HTTP 4xx/5xx; ``status`` holds the code), ``bad_reply`` (2xx whose body is not
    the JSON expected) or ``redirect_refused`` (a 3xx: redirects are never followed). ``url`` is the
    URL of the request. ``str(exc)`` is a one-line message naming the URL.
    """

    def __init__(self, message: str, reason: str = "connection_error", *, url: str | None = None,
                 status: int | None = None):
        if reason not in TRANSPORT_REASONS:
            raise ValueError(f"unknown transport failure reason {reason!r} (one of {sorted(TRANSPORT_REASONS)})")
        super().__init__(message)
        self.reason = reason
        self.url = url
        self.status = status

    def __reduce__(self):  # keep reason/url/status through pickling (process pools)
        return (_rebuild_transport_error, (str(self), self.reason, self.url, self.status))


def _rebuild_transport_error(message, reason, url, status) -> TransportError:
    return TransportError(message, reason, url=url, status=status)
