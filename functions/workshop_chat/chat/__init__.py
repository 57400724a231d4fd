"""The chat core: turns, a reply's life, outcomes, attachments, prompts. No Google SDK, no Firebase
Admin, no web framework: adapters implement its ports (`ports.py`).
"""
