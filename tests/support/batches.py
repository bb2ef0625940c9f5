"""Task batches built from random token ids, for attribution tests that need no tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """The ``TaskBatch`` fields attribution reads."""

    clean_ids: torch.Tensor
    corrupt_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_pos: torch.Tensor
    answer_ids: torch.Tensor
    wrong_ids: torch.Tensor

    def __len__(self) -> int:
        return self.clean_ids.shape[0]

    def rows(self, idx) -> Batch:
        return Batch(**{k: v[idx] for k, v in self.__dict__.items()})

    def padded(self, extra: int, pad_id: int = 0) -> Batch:
        """The same batch with ``extra`` more padding columns on the right."""
        n = self.clean_ids.shape[0]
        pad = torch.full((n, extra), pad_id)
        return Batch(
            clean_ids=torch.cat([self.clean_ids, pad], 1),
            corrupt_ids=torch.cat([self.corrupt_ids, pad], 1),
            attention_mask=torch.cat([self.attention_mask, torch.zeros(n, extra).long()], 1),
            target_pos=self.target_pos,
            answer_ids=self.answer_ids,
            wrong_ids=self.wrong_ids,
        )


def random_batch(
    n: int = 4,
    n_pos: int = 6,
    vocab: int = 512,
    seed: int = 0,
    *,
    corrupt_at: int = 1,
    min_len: int = 3,
    full_first: bool = True,
) -> Batch:
    """Rows of ``min_len`` to ``n_pos`` real tokens, right-padded (the first row full unless
    ``full_first`` is off); the corrupted prompt differs from the clean one at ``corrupt_at``."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, vocab, (n, n_pos), generator=gen)
    corrupt = clean.clone()
    corrupt[:, corrupt_at] = torch.randint(3, vocab, (n,), generator=gen)
    lengths = torch.randint(min_len, n_pos + 1, (n,), generator=gen)
    if full_first:
        lengths[0] = n_pos
    mask = (torch.arange(n_pos)[None, :] < lengths[:, None]).long()
    return Batch(
        clean_ids=clean * mask,
        corrupt_ids=corrupt * mask,
        attention_mask=mask,
        target_pos=lengths - 1,
        answer_ids=torch.randint(3, vocab, (n,), generator=gen),
        wrong_ids=torch.randint(3, vocab, (n,), generator=gen),
    )
