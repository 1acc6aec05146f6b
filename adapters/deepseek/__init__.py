"""DeepSeek: OpenAI's wire format with DeepSeek's differences. Imports adapters' shared modules and
adapters.openai.
"""
