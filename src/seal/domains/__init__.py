"""SEAL domains: each supplies prompt(item), to_update(item, text) and score(slot, item)."""
