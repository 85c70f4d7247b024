"""Knowledge incorporation: passages in, implications as self-edits, closed-book QA as reward."""
