"""Structured sampling: each generated row kept inside a JSON schema by a token mask, step by step.

The masks come from llguidance, the grammar engine behind the structured outputs of vLLM and
SGLang. It was chosen over xgrammar, whose fast mask application is compiled for GPUs and whose
wheels pin torch, and over outlines-core, which builds the whole automaton of a schema over the
vocabulary up front: llguidance is one wheel without dependencies, reads Hugging Face tokenizers,
and computes one row's mask on demand in microseconds on a CPU.

A token the schema does not allow gets logit -inf before temperature and top-p are applied, so the
model still chooses among the allowed tokens, with their relative probabilities unchanged: the
policy's choices stay its own, which is what ReST-EM learns from.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import llguidance
import llguidance.hf
import torch
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask
from transformers import LogitsProcessor, PreTrainedTokenizerBase

_BITS = torch.arange(32, dtype=torch.int32)


@lru_cache(maxsize=4)
def _grammar_tokenizer(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> llguidance.LLTokenizer:
    """llguidance's view of the tokenizer (about a second to build, so built once per tokenizer)."""
    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)


def schema_grammar(schema: dict[str, Any]) -> str:
    """The grammar of JSON documents valid under ``schema``, written compactly (no free whitespace, so
    a schema whose strings, numbers and arrays are bounded has a bounded length)."""
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults={"whitespace_flexible": False})
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error:
        raise ValueError(f"the self-edit schema cannot be compiled: {error}")
    return grammar


class SchemaMask(LogitsProcessor):
    """A ``transformers`` logits processor holding one grammar matcher per batch row.

    Each call first advances every row's matcher by the token the row last sampled, then masks the
    scores of tokens the row's matcher does not allow. A row that has ended (its end-of-sequence
    token sampled) is left alone: generation pads it from then on.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, schema: dict[str, Any], rows: int, prompt_width: int):
        self.tokenizer = tokenizer
        self.grammar = schema_grammar(schema)
        self.rows = rows
        self.prompt_width = prompt_width
        self.matchers: list[llguidance.LLMatcher] | None = None
        self.ended = [False] * rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab_size = scores.shape[-1]
        if self.matchers is None:
            grammar_tokenizer = _grammar_tokenizer(self.tokenizer, vocab_size)
            self.matchers = [llguidance.LLMatcher(grammar_tokenizer, self.grammar) for _ in range(self.rows)]
        elif input_ids.shape[1] > self.prompt_width:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if self.ended[row]:
                    continue
                if token == self.tokenizer.eos_token_id:
                    self.ended[row] = True
                elif not self.matchers[row].consume_token(token):
                    raise RuntimeError(f"row {row}: a masked token was sampled ({self.matchers[row].get_error()})")
        bitmask = allocate_token_bitmask(self.rows, vocab_size)
        for row, matcher in enumerate(self.matchers):
            if not self.ended[row]:
                fill_next_token_bitmask(matcher, bitmask, row)
        allowed = ((torch.from_numpy(bitmask).unsqueeze(-1) >> _BITS) & 1).flatten(1)[:, :vocab_size].bool()
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))
