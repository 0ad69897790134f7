"""Version resolution under the routing: canary share, routing-key stickiness, named versions.

:func:`routing_resolver` is the data plane's resolver (:attr:`serving.dataplane.DataPlane.resolver`)
in the server. For each prediction request:

1. a version the request names (``?version=``, ``/v2/models/<m>/versions/<v>``) answers, as before;
2. else, when the worker applied a routing with a canary (:mod:`serving.routing_state`), the
   canary answers with probability P (:func:`serving.traffic.choose`); a request carrying an
   ``X-Routing-Key`` header is placed by a hash of the key, so the same key always gets the same
   version on every worker and replica;
3. else the model's default version (``stable``, or the greatest version without a routing file).

A canary that is named but not loaded (refused at load) never fails a request: stable answers.
The doors put the answering version in an ``X-Model-Version`` response header (:data:`VERSION_HEADER`).
"""

from __future__ import annotations

from serving import traffic
from serving.dataplane import RequestInfo, resolve_version
from serving.loading import LoadedModel
from serving.registry import ModelState

#: The request header whose value pins a client to one side of the canary split.
ROUTING_KEY_HEADER = "X-Routing-Key"
#: The response header that names the version that answered (``/predict`` and V2).
VERSION_HEADER = "X-Model-Version"


def routing_resolver(state: ModelState, request: RequestInfo) -> LoadedModel:
    """The loaded model that answers ``request``: named version, else canary or stable."""
    routing = state.routing
    if request.version is not None or routing is None or routing.canary is None:
        return resolve_version(state, request)
    version, role = traffic.choose(state.name, routing, request.headers.get(ROUTING_KEY_HEADER) or None)
    if role == traffic.CANARY:
        vs = state.versions.get(version)
        if vs is not None and vs.ready and vs.model is not None:
            return vs.model
    return resolve_version(state, request)


__all__ = ["ROUTING_KEY_HEADER", "VERSION_HEADER", "routing_resolver"]
