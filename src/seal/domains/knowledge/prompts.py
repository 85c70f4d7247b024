"""Self-edit prompts for knowledge incorporation, by name. The name is recorded in every run config."""

from __future__ import annotations

SELF_EDIT_PROMPTS: dict[str, str] = {
    "implications": (
        "Read the passage below and list the implications that follow from it, directly or indirectly. "
        "Write one implication per line.\n\n"
        "Passage:\n{title}\n{context}\n\nImplications:"
    ),
    "implications-long": (
        "Read the passage below and write a long, detailed list of implications that follow from it, "
        "directly or indirectly. Restate every name, number and date you use. Write one implication per line.\n\n"
        "Passage:\n{title}\n{context}\n\nImplications:"
    ),
    "rewrite": (
        "Rewrite the passage below in several different ways, keeping every fact. "
        "Separate the versions with a blank line.\n\n"
        "Passage:\n{title}\n{context}\n\nRewrites:"
    ),
    "self-qa": (
        "Write questions about the passage below, each followed by its answer, covering every fact in it. "
        "Use the form 'Question: ... Answer: ...', one pair per line.\n\n"
        "Passage:\n{title}\n{context}\n\nQuestions and answers:"
    ),
}

DEFAULT_SELF_EDIT_PROMPT = "implications"

ANSWER_PROMPTS: dict[str, str] = {
    "topic": "Topic: {title}\n{question}",
    # the official code's answering template (it names no topic: the passage's title is left out)
    "paper": "Let's answer a question directly and concisely.\nQuestion: {question}\nAnswer:",
}
