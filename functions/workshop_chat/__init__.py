"""workshop-chat: a streaming Gemini chat for design-thinking workshops, kept in Firestore."""
