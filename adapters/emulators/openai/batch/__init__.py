"""The OpenAI emulator's Files/Batch state machine: request validation, the engine on the
injectable clock, result lines and test controls.
"""
