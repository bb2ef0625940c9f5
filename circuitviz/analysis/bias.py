"""The gender task's prejudice risk per occupation (the circuit-tuning paper's bias metric).

For each occupation of the dev prompts: ``p`` = the mean, over its prompts, of the stereotyped
pronoun's probability renormalised over the two pronouns (``sigmoid`` of the logit difference),
and its prejudice risk ``|2p - 1|`` (0: the model picks either pronoun alike; 1: always the
stereotyped one, or always the other). ``tasks.gender.report_gender`` averages these over
occupations; here each is kept, so their distribution before and after tuning can be drawn.
"""

from __future__ import annotations

import torch

from circuitviz.tasks.base import logit_diff


def occupation_risks(model, data, batch_size: int = 64) -> dict[str, float]:
    """occupation -> prejudice risk on ``data`` (gender-pronoun ``TaskData``)."""
    occupations = sorted(
        {
            tag.removeprefix("occupation:")
            for tags in data.tags
            for tag in tags
            if tag.startswith("occupation:")
        }
    )
    if not occupations:
        raise ValueError(
            f"task {data.task} tags no occupation: prejudice risk is the gender task's"
        )
    diffs = []
    with torch.no_grad():
        for batch in data.batches(batch_size):
            logits = model.bridge(
                batch.clean_ids.to(model.device),
                attention_mask=batch.attention_mask.to(model.device),
            )
            diffs.append(logit_diff(logits, batch).double().cpu())
    p = torch.sigmoid(torch.cat(diffs))
    out = {}
    for occupation in occupations:
        rows = torch.tensor([f"occupation:{occupation}" in tags for tags in data.tags])
        out[occupation] = float((2 * p[rows].mean() - 1).abs())
    return out
