"""costroute's commands (serve, demo, flush, logs, report, estimate, emulate, bench): argument
parsing and printing. The top of the tree: may import anything in proxy and adapters; nothing
imports it.
"""
