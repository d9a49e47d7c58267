"""`evaluate.backend=openai`: answers from an OpenAI-compatible server that serves the versions.

On a GPU machine evaluation's answers are the slow part of a run; a vLLM started with
`--enable-lora` (and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`) holds the base once and loads each
candidate's adapter by name at runtime, as `serve.backend=vllm` does:
`POST /v1/load_lora_adapter {"lora_name": "cift-<version key>", "lora_path": "<adapter>"}`, then
requests with `model` set to that name. The name is the version's content key, so a name always
means the same weights ("already loaded" counts as loaded). The base is the server's own model
(`evaluate.openai.model`, or the first entry of its `/v1/models` without a parent).

Answers are cut after the Advice line here, as the local generator stops there; the ranked score
still loads the version locally (`cift.evaluate.build.load_model`): it needs the logits of every
candidate condition, which an OpenAI-compatible API does not give.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from cift.evaluate.answers import Version
from cift.models.chat import TeacherReply, TeacherRequest
from cift.models.generator import cut_after_line
from cift.models.openai_chat import OpenAITeacher
from cift.models.sampling import Sampling

PREFIX = "cift-"


def adapter_model_name(version: Version, prefix: str = PREFIX) -> str:
    return f"{prefix}{version.key}"


class RemoteAnswers:
    """What `generate_answers` calls for one version: an OpenAI teacher on the version's model
    name, with the local generator's stop-after-line rule applied to the replies."""

    def __init__(self, teacher: OpenAITeacher) -> None:
        self.teacher = teacher
        self.seconds = 0.0

    def generate(self, requests: list[TeacherRequest], sampling: Sampling) -> list[TeacherReply]:
        started = time.perf_counter()
        replies = self.teacher.generate(requests, sampling)
        self.seconds += time.perf_counter() - started
        failed = [r for r in replies if r.error]
        if failed:  # an empty answer would be cached and scored as the model's
            raise RuntimeError(
                f"evaluate.openai: {len(failed)} requests failed, e.g. {failed[0].key!r}: "
                f"{failed[0].error}"
            )
        if sampling.stop_after_line:
            for r in replies:
                r.text = cut_after_line(r.text, sampling.stop_after_line)
        return replies


class RemoteVersions:
    """Makes `RemoteAnswers` for versions served by one OpenAI-compatible server (see the module
    docstring); `make_generator` is the evaluator's hook."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str = "VLLM_API_KEY",
        concurrency: int = 16,
        timeout_s: float = 120,
        max_retries: int = 4,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.teacher_kw = {
            "concurrency": concurrency,
            "timeout_s": timeout_s,
            "max_retries": max_retries,
        }
        key = os.environ.get(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = client or httpx.Client(timeout=timeout_s, headers=headers)
        self.loaded: set[str] = set()

    def base_model(self) -> str:
        if self.model is None:
            resp = self.client.get(f"{self.base_url}/models")
            resp.raise_for_status()
            roots = [m["id"] for m in resp.json().get("data", []) if not m.get("parent")]
            if not roots:
                raise RuntimeError(f"{self.base_url}/models lists no base model")
            self.model = roots[0]
        return self.model

    def model_name(self, version: Version) -> str:
        """The served model's name for `version`, loading its adapter first when needed."""
        if version.adapter is None:
            return self.base_model()
        name = adapter_model_name(version)
        if name not in self.loaded:
            path = str(Path(version.adapter).resolve())
            resp = self.client.post(
                f"{self.base_url}/load_lora_adapter", json={"lora_name": name, "lora_path": path}
            )
            if resp.status_code >= 400 and "already" not in resp.text.lower():
                raise RuntimeError(
                    f"evaluate.openai: {self.base_url} could not load adapter {path} as {name}: "
                    f"HTTP {resp.status_code} {resp.text[:200]}"
                )
            self.loaded.add(name)
        return name

    def make_generator(self, version: Version, sampling: Sampling) -> RemoteAnswers:
        teacher = OpenAITeacher(
            self.base_url,
            self.model_name(version),
            api_key_env=self.api_key_env,
            name=f"answers {version.name}",
            **self.teacher_kw,
        )
        return RemoteAnswers(teacher)
