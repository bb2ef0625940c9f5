"""General text no task uses, and the language-modelling loss that measures a model's ability on it.

Filler sentences come from a small grammar of everyday topics (weather, food, counting, travel,
questions, instructions). Their split follows the same stable hash as task prompts: the demo corpus
trains on "train" filler only, and `heldout_texts` draws "test" filler, so the loss on it measures
general language ability on sentences the demo model never saw (fine-tuning should not raise it much).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from circuitviz.tasks import lexicon
from circuitviz.tasks.base import TaskBatch, split_of

NUMBERS: tuple[str, ...] = (
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)
WORDS: dict[str, tuple[str, ...]] = {
    "time": ("morning", "evening", "night", "afternoon", "weekend", "summer", "winter"),
    "weather": ("cold", "warm", "windy", "sunny", "cloudy", "wet", "dry", "calm", "bright"),
    "food": (
        "bread",
        "rice",
        "soup",
        "cheese",
        "fish",
        "apples",
        "eggs",
        "beans",
        "salad",
        "pasta",
    ),
    "meal": ("breakfast", "lunch", "dinner", "supper"),
    "plural": (
        "apples",
        "cups",
        "chairs",
        "coins",
        "stones",
        "pens",
        "shells",
        "plates",
        "candles",
    ),
    "location": (
        "on the table",
        "in the kitchen",
        "under the bed",
        "near the door",
        "in the basket",
        "on the shelf",
        "by the fire",
    ),
    "season": ("spring", "summer", "autumn", "winter"),
    "nature": (
        "leaves turn brown",
        "river runs fast",
        "days grow long",
        "snow melts slowly",
        "birds fly south",
        "wind blows hard",
        "grass grows tall",
    ),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "hobby": ("swim", "read", "cook", "sing", "paint", "run", "dance", "walk", "draw"),
    "relative": ("aunt", "uncle", "cousin", "sister", "brother", "grandmother", "grandfather"),
    "dwelling": ("cottage", "flat", "cabin", "house", "farmhouse"),
    "wild": ("field", "forest", "valley", "meadow", "harbor", "mountain", "coast"),
    "animal": ("fox", "rabbit", "deer", "goat", "duck", "mouse", "wolf", "sheep"),
    "animals": ("foxes", "rabbits", "deer", "goats", "ducks", "mice", "wolves", "sheep"),
    "motion": ("across", "into", "through", "around", "along", "past"),
    "ingredient": ("flour", "sugar", "milk", "water", "butter", "oil"),
    "container": ("bowl", "pot", "pan", "jar", "cup"),
    "thing": ("umbrella", "hammer", "blanket", "camera", "lantern", "jacket", "kettle", "radio"),
    "adjective": ("small", "quiet", "warm", "bright", "simple", "lovely", "narrow", "busy"),
    "landmark": ("bakery", "church", "fountain", "corner", "bank", "square", "bridge"),
    "side": ("left", "right"),
    "errand": ("buy milk", "post a letter", "visit a friend", "see a film", "catch a train"),
}
TEMPLATES: tuple[str, ...] = (
    "The {time} was {weather} and {weather}.",
    "There are {number} {plural} {location}.",
    "We ate {food} and {food} for {meal}.",
    "It rained all {time}, so the streets were wet.",
    "In the {season}, the {nature}.",
    "How many {plural} did you count?",
    "Please put the {thing} {location}.",
    "The bus leaves at {number} in the {time}.",
    "I will bring the {thing} on {day}.",
    "{name} likes to {hobby} on {day}.",
    "My {relative} lives in a {adjective} {dwelling} near the {wild}.",
    "Can you pass me the {thing}, please?",
    "A {animal} ran {motion} the {wild}.",
    "Add {number} cups of {ingredient} to the {container}.",
    "On {day}, we went to the {landmark} to {errand}.",
    "Yesterday we walked to the {wild} and saw {number} {animals}.",
    "Turn {side} at the {landmark} and walk to the {landmark}.",
    "Where did you leave the {thing}?",
    "It is {weather} today, so take a {thing}.",
    "{name} and I like to {hobby} in the {time}.",
    "There was {food} in the {container}, but no {ingredient}.",
    "Every {time} we {hobby} by the {wild}.",
)


def filler_sentence(rng: random.Random) -> str:
    """One sentence of general text from the filler grammar."""
    template = rng.choice(TEMPLATES)
    out, rest = [], template
    # Fill slots left to right so a slot used twice ("{weather} and {weather}") draws twice.
    while "{" in rest:
        head, _, tail = rest.partition("{")
        slot, _, rest = tail.partition("}")
        out.append(head)
        if slot == "number":
            out.append(rng.choice(NUMBERS))
        elif slot == "name":
            out.append(rng.choice(lexicon.NAMES))
        else:
            out.append(rng.choice(WORDS[slot]))
    out.append(rest)
    return "".join(out)


def filler_texts(n: int, *, split: str, seed: int = 0) -> list[str]:
    """`n` filler sentences of one split ("train", "dev", "test"), deterministic in `seed`."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"filler:{split}:{seed}")
    texts: list[str] = []
    for _ in range(200 * max(n, 1)):
        if len(texts) == n:
            return texts
        text = filler_sentence(rng)
        if split_of(text) == split:
            texts.append(text)
    raise ValueError(f"could not draw {n} filler sentences of split {split!r}")


def heldout_texts(n: int = 256, *, seed: int = 0) -> list[str]:
    """General-text sentences that no task uses and the demo model never trained on."""
    return filler_texts(n, split="test", seed=seed)


def _text_batches(
    tokenizer: Any, texts: Sequence[str], batch_size: int, device: torch.device
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            list(texts[start : start + batch_size]), padding=True, return_tensors="pt"
        )
        yield encoded["input_ids"].to(device), encoded["attention_mask"].to(device)


@torch.no_grad()
def lm_loss(
    model: Any, texts_or_batches: Sequence[str] | Iterable[TaskBatch], *, batch_size: int = 64
) -> float:
    """Mean next-token cross-entropy per predicted token (padding excluded).

    `model` needs `.bridge(ids) -> logits [batch, pos, d_vocab]`, `.tokenizer` and `.device` (a
    `LoadedModel`). Accepts plain texts (tokenized with the model's tokenizer) or TaskBatches, whose
    `train_ids` (prompt + answer + continuation) are scored.
    """
    items = list(texts_or_batches)
    if not items:
        raise ValueError("lm_loss needs at least one text or batch")
    if isinstance(items[0], str):
        pairs = _text_batches(model.tokenizer, items, batch_size, model.device)
    else:
        pairs = ((b.train_ids.to(model.device), b.train_mask.to(model.device)) for b in items)
    total, count = 0.0, 0
    for ids, mask in pairs:
        logits = model.bridge(ids)  # [batch, pos, d_vocab]
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logprobs.gather(2, ids[:, 1:, None])[..., 0]  # [batch, pos - 1]
        predicted = mask[:, 1:].bool() & mask[:, :-1].bool()
        total += float(nll[predicted].sum().item())
        count += int(predicted.sum().item())
    return total / count
