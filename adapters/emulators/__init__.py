"""Faithful local stand-ins for the providers, shipped with the package so that tests,
``costroute demo`` and users' own tests can run with no network and no keys.

They enforce the providers' rules (see shared providers.md), keep state, read time from
an injectable clock, and take fault injection from tests, either in-process through
``app.state.faults`` or over HTTP at ``POST /_emulator/faults``.
"""
