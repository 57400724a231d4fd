"""The other Google clients: Gemini and Cloud Storage, one small adapter each."""
