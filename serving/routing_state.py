"""The routing version policy inside a worker: read ``routing.json``, keep the last good one.

:meth:`serving.registry.Registry.refresh` calls :func:`apply` for a model served under the
``routing`` policy, and :meth:`~serving.registry.Registry.changed` calls :func:`file_changed`,
so a changed routing file is picked up by the same watcher poll (or SIGHUP) that picks up a
new version directory, with no restart.

A routing file that does not parse, fails its schema or names a version that is not on disk
is *not applied*: the worker keeps the last routing it applied (or, when it never applied one,
serves the greatest version as without a routing file), logs the reason once per change of the
file, and the reason shows in ``/readyz``'s detail and in the ``dlqr_routing_invalid`` metric.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dlqr import repository
from dlqr import routing as R

log = logging.getLogger("serving.registry")


def apply(
    registry: Any, name: str, cands: Sequence[repository.Candidate]
) -> tuple[R.Routing | None, str | None]:
    """The routing to apply for ``name`` now and why the file on disk is not applied (or None)."""
    mdir = registry.artifacts_dir / name
    key = R.file_key(mdir)
    first = name not in registry._routing
    seen_key, good, _ = registry._routing.get(name, ((), None, None))
    error = None
    try:
        found = R.read(mdir)
    except R.RoutingError as exc:
        found, error = None, str(exc)
    if found is None and error is None:  # no routing file: today's behaviour, said once
        if first or seen_key != key:
            log.info("model %s: no %s in %s; serving the greatest version", name, R.ROUTING_FILE, mdir,
                     extra={"event": "routing_absent", "model": name})  # fmt: skip
        registry._routing[name] = (key, None, None)
        return None, None
    if found is not None:
        missing = found.missing(c.version for c in cands)
        if missing:
            error = f"{R.ROUTING_FILE} names version {', '.join(missing)}, which is not in {mdir.name}/"
        else:
            if found != good:
                log.info("model %s: routing applied: %s", name, found.describe(),
                         extra={"event": "routing_applied", "model": name, "routing": found.describe()})  # fmt: skip
            good = found
    if error is not None:
        kept = f"the last good routing {good.describe()}" if good else "the greatest version"
        error = f"{name}: {error}; not applied, serving {kept}"
        if seen_key != key or first:  # once per change of the file, not at every poll
            log.error("model %s: routing refused: %s", name, error,
                      extra={"event": "routing_refused", "model": name})  # fmt: skip
    registry._routing[name] = (key, good, error)
    return good, error


def file_changed(registry: Any, name: str) -> bool:
    """Whether the model's routing file differs from the one last read (routing policy only)."""
    if registry.policy.for_model(name) != repository.ROUTING:
        return False
    seen = registry._routing.get(name)
    return seen is None or seen[0] != R.file_key(registry.artifacts_dir / name)
