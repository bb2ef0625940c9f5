import os

import pytest

# Tests never reach a model hub; a hub id must fail fast and clearly instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_gpt2():
    from circuitviz.models import load_model

    return load_model("random:gpt2-tiny", device="cpu", dtype="float64")


@pytest.fixture(scope="session")
def tiny_llama():
    from circuitviz.models import load_model

    return load_model("random:llama-tiny", device="cpu", dtype="float64")
