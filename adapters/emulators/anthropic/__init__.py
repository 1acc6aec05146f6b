"""The Anthropic emulator: the Messages API, plain and streamed, with Anthropic's
validation, errors and rate-limit headers. Imports adapters.emulators' shared modules."""
