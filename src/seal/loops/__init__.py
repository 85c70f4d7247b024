"""The loops every domain shares: the inner loop (update, score, discard)."""
