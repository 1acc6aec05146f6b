"""The OpenAPI document costroute serves at /openapi.json, built from its parts (components, paths,
operations, the fallback for unknown surfaces). Part of api.
"""
