"""The paper profile on a GPU machine. Offline only where it must be: the embedded models load
from local folders without the network whatever HF_HUB_OFFLINE says; a named hub model goes to
the usual HF cache (importing cift never sets HF_HUB_OFFLINE for the user). And every endpoint
has its own default port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlparse

from tests.conftest import ROOT, compose

NO_NETWORK = """
import socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:] or args)[:200])
    raise OSError("network used")
socket.socket.connect = refuse
socket.create_connection = refuse
"""


def _python(code: str) -> dict:
    """Run `code` in a fresh interpreter without HF_HUB_OFFLINE; its last stdout line is JSON."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_named_hub_model_uses_the_hf_cache_and_offline_is_not_forced():
    out = _python(
        """
import json, os
import huggingface_hub
import cift.models.loading as loading
calls = []
huggingface_hub.snapshot_download = lambda repo, **kw: calls.append([repo, kw]) or "/snapshot"
spec = loading.ModelSpec(name="x", source="hf", path="some/id")
folder = spec.local_dir()
from huggingface_hub import constants
print(json.dumps({"folder": str(folder), "calls": calls, "env": os.environ.get("HF_HUB_OFFLINE"),
                  "hub_offline": constants.HF_HUB_OFFLINE}))
"""
    )
    assert out["env"] is None and out["hub_offline"] is False
    assert out["folder"] == "/snapshot" and out["calls"][0][0] == "some/id"
    assert "*.safetensors" in out["calls"][0][1]["allow_patterns"]


def test_the_embedded_models_never_touch_the_network():
    out = _python(
        NO_NETWORK
        + """
import json, os
from cift.models.loading import ModelSpec
from cift.scoring.embeddings import sentence_model
loaded = ModelSpec(name="tiny", source="tiny_random").load(dtype="float32")
vectors = sentence_model().encode(["fever and cough"])
print(json.dumps({"hash": loaded.base_hash, "dim": int(vectors.shape[1]),
                  "env": os.environ.get("HF_HUB_OFFLINE"), "attempts": attempts}))
"""
    )
    assert out["attempts"] == []
    assert out["env"] is None and len(out["hash"]) == 64 and out["dim"] == 384


def test_default_ports_are_distinct():
    """cift serve, the vLLM it drives (candidates' LoRA adapters) and the teacher/judge
    endpoint each have their own port, so the paper run's servers can all run at once."""
    cfg = compose(["teacher=openai", "judge=openai"])
    serve = cfg.serve.port
    candidates = urlparse(cfg.serve.vllm_url).port
    teacher = urlparse(cfg.teacher.backend.base_url).port
    judge = urlparse(cfg.judge.backend.base_url).port
    assert len({serve, candidates, teacher}) == 3
    assert judge not in (serve, candidates)  # a judge never grades with the served model
