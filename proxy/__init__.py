"""costroute: an OpenAI-compatible proxy that routes each LLM call down the cheapest
lane that still meets the caller's deadline."""

__version__ = "0.1.0"
