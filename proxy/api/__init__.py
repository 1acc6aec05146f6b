"""The HTTP surface: one module per public surface (chat and embeddings, models, tickets, admin,
health), body reading, errors on the wire, the streaming relay, the server protocol and the
OpenAPI document. May import every proxy package but cli and app.
"""
