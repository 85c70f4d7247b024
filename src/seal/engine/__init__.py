"""Batched generation and LoRA updates."""
