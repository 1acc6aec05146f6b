"""OpenAI: the real-time chat adapter (also the base of OpenAI-compatible providers) and the
Files/Batch API lane. Imports only adapters' shared modules.
"""
