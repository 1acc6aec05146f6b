"""What operators see: the routing log and per-request accounting, metrics, alerts, admin queries,
the ops page and its sign-in. May import deferral, lanes, costs, store and the top-level
vocabulary; never api or cli.
"""
