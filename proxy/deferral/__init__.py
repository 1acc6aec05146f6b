"""The deferral queue's life: enqueue, batch files, the flusher, ingest, the deadline guard, the
scheduler that runs them, and webhooks. May import lanes, costs, store and the top-level
vocabulary; never ops, api or cli.
"""
