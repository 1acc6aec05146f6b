"""``costroute simulate``: a workload run through the real proxy on a virtual clock.

The simulator builds the same application ``costroute serve`` runs (``proxy.app``), in
front of the shipped emulators (``adapters.emulators``) shaped by a scenario, and steps
the scheduler's own steps (``Scheduler.steps()``) as virtual time passes, so every
request takes the real planner, queue, flusher, poller, ingest, deadline guard and
real-time lane. It sits above ``proxy.app`` (it builds the app) and below ``proxy.cli``.

- ``workload``: the JSONL workload format; ``replay``: a workload from a routing log
- ``scenario``: how each provider behaves (turnaround, failures, flex capacity, ...)
- ``world``: the emulators a scenario describes; ``vclock``: virtual time and sleeps
- ``engine``: drives arrivals and scheduler steps; ``asgi``: hands each arrival to the
  app's ASGI interface; ``report``, ``chart``: the results
- ``reference``: the shipped workloads (``proxy/data/simulate/``)
"""
