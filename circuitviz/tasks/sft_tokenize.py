"""From SFT examples and a tokenizer to an ``SFTData``: chat template, prompt masking, truncation.

For each example:

1. The prompt text: with a chat template (and ``SFTFormat.chat_template``), the rendered
   conversation up to the assistant's turn (``add_generation_prompt=True``; the template adds its
   own BOS); otherwise the prompt itself (the tokenizer adds its special tokens).
2. The response text: with a template, what the full rendered conversation adds after the prompt
   text (the response and the template's end-of-turn marker); otherwise the response, followed by
   the EOS token when ``append_eos``.
3. Prompt and response are tokenized separately and concatenated, so the boundary between masked
   and trained tokens is exact (no token straddles it); labels are -100 on the prompt.
4. The answer's characters (the text after the response's first ``####``, or the last occurrence
   of the example's ``answer``) are mapped to the response tokens that overlap them.
5. Longer than ``max_length``: the response is cut to fit (counted in ``n_truncated``), or the
   example is dropped (``overflow="drop"``, or a prompt that alone fills ``max_length``; counted in
   ``n_dropped_too_long``). Nothing is left out silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from circuitviz.tasks.sft import (
    ANSWER_MARK,
    IGNORE_INDEX,
    SFTBatch,
    SFTData,
    SFTExample,
    SFTFormat,
)

log = logging.getLogger(__name__)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def pad_id_of(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _messages(example: SFTExample, fmt: SFTFormat) -> list[dict[str, str]]:
    messages = []
    if fmt.system_prompt is not None:
        messages.append({"role": "system", "content": fmt.system_prompt})
    messages.append({"role": "user", "content": example.prompt})
    return messages


def render(tokenizer: Any, example: SFTExample, fmt: SFTFormat) -> tuple[str, str, bool]:
    """(prompt text, response text, whether the chat template was used) of one example."""
    if fmt.chat_template and has_chat_template(tokenizer):
        messages = _messages(example, fmt)
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": example.response}], tokenize=False
        )
        if full.startswith(prompt):
            return prompt, full[len(prompt) :], True
        log.debug("chat template: the conversation does not extend the prompt; appending")
        return prompt, example.response, True
    return example.prompt, example.response, False


def answer_span(response_text: str, example: SFTExample) -> tuple[int, int] | None:
    """Character span of the final answer inside ``response_text`` (None if not found)."""
    if example.answer is not None:
        start = response_text.rfind(example.answer.strip())
        if start < 0:
            return None
        return start, start + len(example.answer.strip())
    mark = response_text.find(ANSWER_MARK)
    if mark < 0:
        return None
    reference = example.reference_answer
    if reference is None:
        return None
    start = response_text.find(reference, mark + len(ANSWER_MARK))
    return None if start < 0 else (start, start + len(reference))


def _token_spans(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` (no special tokens) and each token's character span."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans, end = [], 0  # slow tokenizers: decode prefixes to find where each token ends
    for i in range(len(ids)):
        stop = len(tokenizer.decode(ids[: i + 1]))
        spans.append((end, stop))
        end = stop
    return list(ids), spans


@dataclass(frozen=True)
class _Encoded:
    prompt: list[int]
    response: list[int]
    answer: list[bool]  # per response token
    truncated: bool


def encode_example(
    tokenizer: Any, example: SFTExample, fmt: SFTFormat
) -> tuple[_Encoded | None, bool]:
    """The tokens of one example, or None if it is dropped; and whether the template was used."""
    prompt_text, response_text, templated = render(tokenizer, example, fmt)
    prompt = list(tokenizer(prompt_text, add_special_tokens=not templated)["input_ids"])
    response, spans = _token_spans(tokenizer, response_text)
    span = answer_span(response_text, example)
    answer = [
        span is not None and start < span[1] and stop > span[0] and stop > start
        for start, stop in spans
    ]
    if not templated and fmt.append_eos and tokenizer.eos_token_id is not None:
        response.append(int(tokenizer.eos_token_id))
        answer.append(False)
    room = fmt.max_length - len(prompt)
    if room < 1 or (len(response) > room and fmt.overflow == "drop"):
        return None, templated
    truncated = len(response) > room
    return _Encoded(prompt, response[:room], answer[:room], truncated), templated


def stop_ids_of(tokenizer: Any, templated: bool) -> tuple[int, ...]:
    """Tokens that end a generated response: EOS, and the chat template's end-of-turn token (the
    first special token the template puts after an assistant message)."""
    stops = set()
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    if templated:
        probe = SFTExample(prompt="Hi", response="Hello")
        _, response_text, _ = render(tokenizer, probe, SFTFormat())
        tail = response_text[response_text.find("Hello") + len("Hello") :]
        special = set(getattr(tokenizer, "all_special_ids", []))
        for token in tokenizer(tail, add_special_tokens=False)["input_ids"]:
            if token in special:
                stops.add(int(token))
                break
    return tuple(sorted(stops))


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max((len(row) for row in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def build_sft_batch(encoded: list[_Encoded], pad_id: int) -> SFTBatch:
    """Right-padded ids, mask, labels (-100 on prompt and padding) and answer mask."""
    full = [e.prompt + e.response for e in encoded]
    input_ids = _pad(full, pad_id)
    attention_mask = _pad([[1] * len(row) for row in full], 0)
    labels = _pad([[IGNORE_INDEX] * len(e.prompt) + e.response for e in encoded], IGNORE_INDEX)
    answer = _pad([[0] * len(e.prompt) + [int(a) for a in e.answer] for e in encoded], 0)
    return SFTBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        answer_mask=answer.bool(),
        prompt_len=torch.tensor([len(e.prompt) for e in encoded], dtype=torch.long),
    )


def tokenize_sft(
    tokenizer: Any,
    examples: list[SFTExample],
    fmt: SFTFormat,
    *,
    task: str,
    split: str,
    device: torch.device | str = "cpu",
) -> SFTData:
    """Tokenize ``examples`` (see the module docstring); counts say what was cut or left out."""
    kept: list[tuple[SFTExample, _Encoded]] = []
    n_dropped = 0
    templated = fmt.chat_template and has_chat_template(tokenizer)
    for example in examples:
        encoded, _ = encode_example(tokenizer, example, fmt)
        if encoded is None:
            n_dropped += 1
        else:
            kept.append((example, encoded))
    n_truncated = sum(enc.truncated for _, enc in kept)
    n_not_located = sum(ex.reference_answer is not None and not any(enc.answer) for ex, enc in kept)
    if n_truncated or n_dropped:
        log.warning(
            "task %s (%s): %d responses truncated and %d examples dropped at max_length=%d",
            task,
            split,
            n_truncated,
            n_dropped,
            fmt.max_length,
        )
    batch = build_sft_batch([enc for _, enc in kept], pad_id_of(tokenizer)).to(device)
    return SFTData(
        task=task,
        split=split,
        examples=tuple(ex for ex, _ in kept),
        batch=batch,
        n_truncated=n_truncated,
        n_dropped_too_long=n_dropped,
        n_answer_not_located=n_not_located,
        chat_template=templated,
        stop_ids=stop_ids_of(tokenizer, templated),
        max_length=fmt.max_length,
    )
