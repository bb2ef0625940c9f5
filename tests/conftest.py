import os

# Tests never reach a model hub; a hub id must fail fast and clearly instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models on a small shared machine: one torch thread per process (this one and every process
# a test starts). Extra threads only wait on each other; a 2-core CI box ran 2-thread processes up
# to 20x slower. Set before torch is imported, so its thread pools start at that size.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_gpt2():
    from circuitviz.models import load_model

    return load_model("random:gpt2-tiny", device="cpu", dtype="float64")


@pytest.fixture(scope="session")
def tiny_llama():
    from circuitviz.models import load_model

    return load_model("random:llama-tiny", device="cpu", dtype="float64")


@pytest.fixture
def float64_llama(tiny_llama, monkeypatch):
    """tiny_llama computed in float64 throughout. Llama's RMSNorm and the bridge's rotary attention
    softmax run in float32 even for float64 models; a finite difference would then measure float32
    rounding (errors ~1e-3), not the derivative. Patch both to keep the input dtype."""
    from transformer_lens.model_bridge.generalized_components import position_embeddings_attention
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    bridge_cls = position_embeddings_attention.PositionEmbeddingsAttentionBridge
    softmax = bridge_cls._masked_softmax

    def masked_softmax(self, scores, dtype=None):
        return softmax(self, scores, dtype=None if scores.dtype == torch.float64 else dtype)

    def rms_norm(self, x):
        return self.weight * (
            x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        )

    monkeypatch.setattr(bridge_cls, "_masked_softmax", masked_softmax)
    monkeypatch.setattr(LlamaRMSNorm, "forward", rms_norm)
    return tiny_llama


@pytest.fixture(scope="module")
def demo_tokenizer_dir(tmp_path_factory):
    """Random models borrow the demo tokenizer (task words must be in the vocabulary): built into a
    temporary directory that ``CIRCUITVIZ_DEMO_MODEL`` points at for the module, so these tests
    never depend on the trained demo model."""
    from circuitviz.demo.tokenizer import build_demo_tokenizer

    directory = tmp_path_factory.mktemp("demo-tokenizer")
    build_demo_tokenizer().save_pretrained(directory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CIRCUITVIZ_DEMO_MODEL", str(directory))
        yield directory
