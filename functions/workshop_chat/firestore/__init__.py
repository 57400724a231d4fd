"""The Firestore adapters: one module per document family, over one shared access."""
