"""The OpenAI emulator (also serves as DeepSeek's): chat, embeddings, models, Files and Batch.
Imports adapters.emulators' shared modules (control, faults, tokens, transport).
"""
