"""ARC-AGI-1 few-shot abstract reasoning: grids, test-time-training augmentations and task loading."""
