"""Anthropic: OpenAI chat requests translated to the Messages API and back, plain and
streamed. Imports only adapters' shared modules."""
