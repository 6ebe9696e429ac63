"""The three self-play roles: their Enum, the chat prompts they send, and the strict parsing of their responses.

Ray actor wrappers for the roles live beside these modules; the modules here are plain Python.
"""
