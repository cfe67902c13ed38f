"""Stand-ins for a store that watch each of its interface methods' calls.

Metrics (:func:`dittofs.metrics.metered`) and tracing
(:meth:`dittofs.tracing.Tracing.store`) wrap stores this way: whatever a
method does (raise, return, return a Deferred), the watcher hears once how it
ended, and the outcome passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import Interface, directlyProvides, providedBy

#: What :func:`observed` carries from the start of a call to its end.
_State = TypeVar("_State")


def wrap_methods(
    store: Any,
    interface: type[Interface],
    wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]],
) -> Any:
    """A stand-in for *store* whose *interface* methods are ``wrap(name, method)``.

    The stand-in provides whatever the store provides, so it can stand wherever
    the store stood; attributes outside the interface pass through untouched.
    Metrics (:func:`metered`) and tracing (:mod:`dittofs.tracing`) wrap stores
    this way.
    """

    class Wrapped:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    wrapper = Wrapped()
    for name in interface.names(all=True):
        attribute = getattr(store, name, None)
        if callable(attribute):
            setattr(wrapper, name, wrap(name, attribute))
    directlyProvides(wrapper, providedBy(store))
    return wrapper


def observed(
    method: Callable[..., Any],
    start: Callable[[], _State],
    finish: Callable[[_State, Failure | None], None],
) -> Callable[..., Any]:
    """Wrap *method*: ``start()`` runs before each call, ``finish`` once the call is over.

    A store method may raise, return a value or return a Deferred; whichever it
    does, ``finish(state, failure)`` runs exactly once, when the outcome is
    known, with what ``start`` returned (a start time, a span) and the failure,
    or None on success.  The outcome itself passes through unchanged.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        state = start()
        try:
            result = method(*args, **kwargs)
        except Exception:
            finish(state, Failure())
            raise
        if not isinstance(result, Deferred):
            finish(state, None)
            return result

        def done(outcome: Any) -> Any:
            finish(state, outcome if isinstance(outcome, Failure) else None)
            return outcome

        return result.addBoth(done)

    return call
