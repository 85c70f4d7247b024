"""SEAL domains: each supplies prompt(item), to_update(item, text), queries(item) and grade(item, answers)."""
