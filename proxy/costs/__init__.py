"""Prices (sources, time windows), estimates and cost reports. May import store and the top-level
vocabulary (settings, durations, errors); never lanes, deferral, ops, api or cli.
"""
