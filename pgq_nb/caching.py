"""Cached steps (issue #21, item 4): a job whose result is already known is not run again.

``@q.entrypoint(name, cache=True)`` makes each job of ``name`` a look-up first: its cache key
is the sha256 of the entrypoint, the handler's version and the payload in canonical JSON (keys
sorted, compact separators, ASCII), so payloads that mean the same give the same key whatever
their key order or spacing. The version is ``version=`` when given, else a hash of the
handler's source (``inspect.getsource``), or of its code object when it has no source: editing
the handler's body makes new keys, and old results are no longer used. (A change in a function
the handler calls is not seen: give ``version=`` and change it then.)

A worker looks the keys of a claimed batch up in one statement (only for jobs of cached
entrypoints: others cost nothing; :mod:`pgq_nb.worker_cache`). A hit completes the job as
succeeded without running the handler, with the result of the job whose handler really ran
(``history.cached_from``; a hit of a hit is followed to its origin); a miss runs, and its
success records the key (``history.cache_key``). Only succeeded jobs whose origin finished
within ``cache_ttl`` count. ``cache=False`` on an enqueue (``jobs.use_cache = false``) runs the
job whatever the cache holds, and its success still records the key.

What cannot be cached: a payload that is not deterministic JSON. That is raw bytes that are
not UTF-8 JSON, JSON with a repeated key in an object (which of the two a reader sees depends
on the reader), and NaN or infinities (not JSON). Such a payload is refused at enqueue
(UncacheablePayloadError) when the enqueuing process has the handler registered with
``cache=True``; otherwise its job fails for good on its first attempt with the same message.
A transactional handler cannot be cached (a hit would skip the writes that are its point).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import inspect
import json
import math
from typing import TYPE_CHECKING, Any

from pgq_nb.errors import InvalidInputError, UncacheablePayloadError
from pgq_nb.models import check_text
from pgq_nb.retention import parse_period

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pgq_nb.registry import Registry

#: The longest explicit ``version=``, in characters.
VERSION_LIMIT = 200


@dataclasses.dataclass(frozen=True)
class CacheOptions:
    """An entrypoint's cache settings, checked: ``ttl`` in seconds (None: for ever) and the
    handler's ``version`` (explicit, or made from its code when registered)."""

    ttl: float | None
    version: str | None  # None until the handler is known: see handler_version


def check_options(
    cache: object, cache_ttl: object, version: object, *, transactional: bool
) -> CacheOptions | None:
    """The cache options of ``@q.entrypoint`` (None: not cached); InvalidInputError when they
    are wrong or do not go together."""
    if not isinstance(cache, bool):
        raise InvalidInputError(
            f"cache must be True or False, not {type(cache).__name__} {cache!r:.60}"
        )
    if not cache:
        if cache_ttl is not None or version is not None:
            raise InvalidInputError(
                "cache_ttl= and version= apply to cached entrypoints: add cache=True"
            )
        return None
    if transactional:
        raise InvalidInputError(
            "a transactional handler cannot be cached: a cache hit skips the handler, and so "
            "the writes that are its point; drop cache=True or transactional=True"
        )
    if version is not None:
        if not isinstance(version, str) or not version:
            raise InvalidInputError(
                f"version must be a non-empty str (e.g. version='2'), not {version!r:.60}"
            )
        check_text("version", version, limit=VERSION_LIMIT)
    return CacheOptions(parse_ttl(cache_ttl), version)


def parse_ttl(value: object) -> float | None:
    """``cache_ttl``: None (for ever), seconds (int or float > 0), a timedelta or a duration
    text ("7d", "12h", "90min") as seconds; InvalidInputError otherwise."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, dt.timedelta | str):
        period = parse_period("cache_ttl", value)
        seconds = 0.0 if period is None else period.total_seconds()
    else:
        raise InvalidInputError(
            f"cache_ttl must be seconds, a datetime.timedelta, a duration such as '7d' or "
            f"None (results kept for ever), not {type(value).__name__}"
        )
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInputError(
            f"cache_ttl={value!r} is not a positive duration: give how long a result may be "
            "reused, such as cache_ttl='7d', or None for ever"
        )
    return seconds


def handler_version(handler: Any) -> str:
    """A version of ``handler`` made from its code: a hash of its source, or of its code
    object when it has none (built in a string, say), and of the arguments a
    ``functools.partial`` binds (by their repr). The same code gives the same version in
    every process."""
    target = handler
    bound: list[str] = []
    while isinstance(target, functools.partial):
        bound.append(repr(target.args) + repr(sorted(target.keywords.items())))
        target = target.func
    version = _code_version(target)
    if bound:
        version += "+args:" + hashlib.sha256("\x00".join(bound).encode()).hexdigest()[:16]
    return version


def _code_version(target: Any) -> str:
    """:func:`handler_version` of a function or callable object (no partial)."""
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = type(target)  # a callable object: its class's source
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        call = getattr(target, "__call__", None)  # noqa: B004 - a callable object's method
        code = getattr(target, "__code__", None) or getattr(call, "__code__", None)
        if code is None:
            name = getattr(target, "__qualname__", type(target).__qualname__)
            return "name:" + hashlib.sha256(str(name).encode()).hexdigest()[:16]
        digest = hashlib.sha256()
        _code_digest(code, digest)
        return "code:" + digest.hexdigest()[:16]
    return "src:" + hashlib.sha256(source.encode()).hexdigest()[:16]


def _code_digest(code: Any, digest: Any) -> None:
    """Feed ``code`` to ``digest``: its bytecode, names and constants (nested code objects by
    their own content, never by their repr, which holds an address)."""
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if inspect.iscode(const):
            _code_digest(const, digest)
        else:
            digest.update(repr(const).encode())


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise UncacheablePayloadError(f"the key {key!r:.60} appears twice in one object")
        seen[key] = value
    return seen


def _no_constant(name: str) -> Any:
    raise UncacheablePayloadError(f"it holds {name}, which is not JSON")


def canonical(payload: bytes | None) -> str:
    """The payload as canonical JSON (keys sorted, compact, ASCII); None is ``null``.
    UncacheablePayloadError (saying why) when it is not deterministic JSON."""
    if payload is None:
        return "null"
    try:
        value = json.loads(payload, object_pairs_hook=_no_repeats, parse_constant=_no_constant)
    except UncacheablePayloadError:
        raise
    except (ValueError, RecursionError):
        raise UncacheablePayloadError("it is raw bytes, not UTF-8 JSON") from None
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:  # a number too large for a float (1e400) reads as infinity
        raise UncacheablePayloadError("it holds a number too large for a float") from None


def cache_key(
    entrypoint: str, version: str, payload: bytes | None, parents: Mapping[str, Any] | None = None
) -> str:
    """The cache key of a job: sha256 of its entrypoint, handler version and canonical payload
    (:func:`canonical`, whose UncacheablePayloadError it raises), and for a workflow step the
    results of the steps it depends on (``job.parent_results()``, as canonical JSON): a step
    reads them as inputs, so a step whose parents returned something else runs again."""
    text = f"{entrypoint}\x00{version}\x00{canonical(payload)}"
    if parents:
        inputs = json.dumps(parents, sort_keys=True, separators=(",", ":"), allow_nan=False)
        text += "\x00" + inputs
    return hashlib.sha256(text.encode()).hexdigest()


def uncacheable_message(entrypoint: str, why: str, where: str) -> str:
    """The message of a payload a cached entrypoint cannot take (``why``: what is wrong)."""
    return (
        f"{where} cannot be cached: {why}. Entrypoint {entrypoint!r} has cache=True, whose "
        "cache key is made from the payload as canonical JSON: pass a dict, list, str, number "
        "or bool (JSON without NaN and without repeated keys), or register the entrypoint "
        "without cache=True"
    )


def check_cacheable(
    registry: Registry,
    entrypoints: Sequence[str],
    payloads: Sequence[bytes | None],
    where: Callable[[int], str] | None = None,
) -> None:
    """At enqueue: UncacheablePayloadError for the first payload that an entrypoint this
    process registered with ``cache=True`` cannot cache (nothing is written). ``where`` names
    the payload at a position (default: ``payloads[i]``, or "the payload" for one)."""
    handlers = registry.handlers
    for position, (name, data) in enumerate(zip(entrypoints, payloads, strict=True)):
        spec = handlers.get(name)
        if spec is None or spec.cache is None:
            continue
        try:
            canonical(data)
        except UncacheablePayloadError as exc:
            if where is not None:
                shown = where(position)
            else:
                shown = "the payload" if len(entrypoints) == 1 else f"payloads[{position}]"
            raise UncacheablePayloadError(uncacheable_message(name, str(exc), shown)) from None


def check_use_cache(value: object) -> bool:
    """``cache=`` of an enqueue: None or True (the entrypoint decides) -> True, False (run the
    job whatever the cache holds) -> False; InvalidInputError otherwise."""
    if value is None or value is True:
        return True
    if value is False:
        return False
    raise InvalidInputError(
        f"cache must be True, False (run even if a cached result exists) or None, not "
        f"{type(value).__name__} {value!r:.60}"
    )
