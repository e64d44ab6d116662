"""The management-cluster gateway: one interface, two implementations.

* :mod:`teapot_portal.gateway.kube` — the real management cluster, through the ``kubernetes``
  client (server-side apply, retries, watches).
* :mod:`teapot_portal.gateway.lab` — a simulation of baremetal-operator, CAPM3, Cluster API
  and Kamaji in PostgreSQL with a simulated clock (the embedded default; a later session).

Object builders (:mod:`teapot_portal.gateway.builders`) are pure functions from Teapot's own
data to Kubernetes dicts; both implementations store exactly what the builders produce.
"""

from teapot_portal.gateway.base import (  # noqa: F401
    Conflict,
    Expired,
    Forbidden,
    Gateway,
    GatewayError,
    HostRecord,
    Invalid,
    NotFound,
    Unavailable,
    WatchEvent,
)
