"""``arithmetic``: word problems with one to three steps of integer arithmetic (a built-in SFT task).

A problem is a starting count and one to three changes to it. Each change is one operation:

* ``add``: "buys 7 more" (x + b);
* ``take``: "gives 4 away" (x - b, never below 1);
* ``packs``: "buys 3 bags of 6" (x + p q: two numbers in one step);
* ``times``: "doubles" / "gets three times as many" (x k);
* ``share``: "splits them equally into 4 boxes and keeps one box" (x / k, always exact).

The prompt states the problem and asks, in the circuit-tuning paper's GSM8K wording, for the answer
after ``#### ``; the response works each step as an equation and ends ``#### <answer>``. Each
example is tagged with its number of steps (``steps=1`` .. ``steps=3``), so evaluation reports exact
match per difficulty. Problems come from a seeded ``random.Random``; splits are disjoint by a hash of
the prompt (``circuitviz.tasks.sft_sources.draw_sft_examples``).
"""

from __future__ import annotations

import random

from circuitviz.tasks.sft import SFTExample

INSTRUCTION = "Please answer step by step and give the final answer after '#### '."
NAMES = (
    ("Mia", "she"),
    ("Noah", "he"),
    ("Ava", "she"),
    ("Liam", "he"),
    ("Zoe", "she"),
    ("Omar", "he"),
    ("Lena", "she"),
    ("Ravi", "he"),
    ("Ines", "she"),
    ("Tom", "he"),
    ("Yuki", "she"),
    ("Sam", "he"),
)
ITEMS = (
    ("apples", "bag"),
    ("marbles", "jar"),
    ("stickers", "sheet"),
    ("pencils", "case"),
    ("cookies", "tin"),
    ("stamps", "album"),
    ("shells", "bucket"),
    ("cards", "pack"),
    ("coins", "purse"),
    ("beads", "string"),
)
MULTIPLIERS = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
MAX_VALUE = 999
OPENERS = ("Then", "After that,", "Finally,")


def _add(rng, x, who, item, unit):
    b = rng.randint(2, 60)
    verb = rng.choice(("buys", "finds", "is given", "wins"))
    return x + b, f"{who} {verb} {b} more {item}.", f"{x} + {b} = {x + b}"


def _take(rng, x, who, item, unit):
    if x < 3:
        return None
    b = rng.randint(1, min(x - 1, 60))
    verb = rng.choice(("gives away", "loses", "sells", "uses"))
    return x - b, f"{who} {verb} {b} {item}.", f"{x} - {b} = {x - b}"


def _packs(rng, x, who, item, unit):
    p, q = rng.randint(2, 9), rng.randint(2, 12)
    text = f"{who} buys {p} {unit}s with {q} {item} in each {unit}."
    return x + p * q, text, f"{p} * {q} = {p * q}, and {x} + {p * q} = {x + p * q}"


def _times(rng, x, who, item, unit):
    k = rng.choice(tuple(MULTIPLIERS))
    text = f"{who} ends up with {MULTIPLIERS[k]} as many {item} as before."
    return x * k, text, f"{x} * {k} = {x * k}"


def _share(rng, x, who, item, unit):
    divisors = [k for k in range(2, 10) if x % k == 0 and x // k >= 1]
    if not divisors:
        return None
    k = rng.choice(divisors)
    text = f"{who} splits the {item} equally into {k} piles and keeps only one pile."
    return x // k, text, f"{x} / {k} = {x // k}"


OPERATIONS = (_add, _take, _packs, _times, _share)


def generate_problem(rng: random.Random) -> SFTExample:
    """One problem with one to three steps (see the module docstring)."""
    name, pron = rng.choice(NAMES)
    item, unit = rng.choice(ITEMS)
    n_steps = rng.randint(1, 3)
    x = start = rng.randint(2, 60)
    sentences, equations = [], []
    for i in range(n_steps):
        who = f"{OPENERS[i]} {name if i == 0 else pron}"
        step = None
        while step is None:  # redraw an operation that does not apply or leaves the range
            step = rng.choice(OPERATIONS)(rng, x, who, item, unit)
            if step is not None and not 1 <= step[0] <= MAX_VALUE:
                step = None
        x, sentence, equation = step
        sentences.append(sentence)
        equations.append(equation)
    question = " ".join(
        [f"{name} has {start} {item}.", *sentences, f"How many {item} does {name} have now?"]
    )
    work = [f"{name} starts with {start} {item}."]
    work += [f"Step {i}: {equation}." for i, equation in enumerate(equations, start=1)]
    response = " ".join([*work, f"{name} has {x} {item} now.", f"#### {x}"])
    return SFTExample(
        prompt=f"{question}\n{INSTRUCTION}",
        response=response,
        answer=str(x),
        tags=(f"steps={n_steps}",),
    )
