"""The lab management cluster: a simulation of baremetal-operator, CAPM3, Cluster API and
Kamaji, with its state in PostgreSQL and a simulated clock.

* :class:`~teapot_portal.gateway.lab.gateway.LabGateway` — the Gateway on top of it;
* :func:`~teapot_portal.gateway.lab.controllers.tick` — one pass of the simulated controllers
  (the ``teapot.lab.tick`` Celery task runs it with the clock following real time);
* :mod:`~teapot_portal.gateway.lab.faults` — failures on demand;
* :mod:`~teapot_portal.gateway.lab.profiles` — the hardware each host "has".
"""
