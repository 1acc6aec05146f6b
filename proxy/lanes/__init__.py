"""Choosing and running a lane: the pure planner, tolerances, the real-time call with its retries
and deadlines. May import store, costs and the top-level vocabulary (settings, durations,
errors, context, auth); never deferral, ops, api or cli.
"""
