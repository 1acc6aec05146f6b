"""The Gemini emulator: generateContent (plain and SSE), countTokens, cachedContents, models.
Imports adapters.emulators' shared modules.
"""
