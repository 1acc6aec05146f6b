"""Gemini: translation to and from generateContent, its HTTP client, and managed context caching.
Imports only adapters' shared modules.
"""
