import os

import pytest

# Tests never reach a model hub; a hub id must fail fast and clearly instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tiny models on a small shared machine: one torch thread per process (this one and every process
# a test starts). Extra threads only wait on each other; a 2-core CI box ran 2-thread processes up
# to 20x slower. Set before torch is imported, so its thread pools start at that size.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")


@pytest.fixture(scope="session")
def tiny_gpt2():
    from circuitviz.models import load_model

    return load_model("random:gpt2-tiny", device="cpu", dtype="float64")


@pytest.fixture(scope="session")
def tiny_llama():
    from circuitviz.models import load_model

    return load_model("random:llama-tiny", device="cpu", dtype="float64")
