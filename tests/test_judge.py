"""The judge that rules or says it cannot: forced-choice verdicts from label log-probabilities on a
tiny random model (batched, both orders), endpoint errors that fail loudly, log-probability
verdicts from an OpenAI-compatible endpoint, calibration on planted pairs, and the gate and
report recording an uncalibrated judge as uninformative."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cift.data.validity import faithfulness_violations
from cift.evaluate.calibrate import (
    KINDS,
    ROUTINE_ADVICE,
    SUMMARY_KEYS,
    calibrate,
    judge_calibration,
    judge_status,
    planted_pairs,
)
from cift.evaluate.forced_choice import LocalJudge
from cift.evaluate.gate import gate_decision
from cift.evaluate.judge import (
    JudgeError,
    calibration_note,
    judge_pairs,
    load_judge_prompt,
)
from cift.kb import load_kb
from cift.models import ModelSpec
from cift.models.chat import TeacherReply, TeacherRequest
from cift.models.openai_chat import OpenAITeacher, TeacherUnavailable
from tests.conftest import compose, running_app

STYLES = ["note", "lay", "dialogue"]


def _items(n: int) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "question": f"Patient {i}: fever and cough{' for days' * i}. What is the diagnosis?",
            "candidate": f"GOOD answer {i}. Diagnosis: Influenza",
            "baseline": f"weak answer {i}. Diagnosis: Common cold",
            "reference": "Diagnosis: Influenza" if i % 2 else None,
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tiny_judge() -> LocalJudge:
    spec = ModelSpec(name="tiny_random", source="tiny_random", dtype="float32")
    return LocalJudge(spec, name="judge-tiny", batch_size=4, device="cpu")


# ----------------------------------------------------------------------------- forced choice


def test_forced_choice_rules_on_every_pair_in_both_orders_batched(tiny_judge):
    before = tiny_judge.forward_passes
    res = judge_pairs(tiny_judge, _items(5))
    assert tiny_judge.forward_passes - before == 3  # 10 prompts, batches of 4: never one by one
    assert res["n"] == 5 and res["method"] == "logprobs" and res["unparseable"] == 0
    assert res["wins"] + res["losses"] + res["ties"] == 5
    for row in res["rows"]:
        assert row["verdict_candidate_a"] in ("A", "B", "tie")
        assert row["verdict_candidate_b"] in ("A", "B", "tie")
        for probs in (row["probs_candidate_a"], row["probs_candidate_b"]):
            assert set(probs) == {"A", "B", "tie"} and sum(probs.values()) == pytest.approx(1)
            assert probs[row["verdict_candidate_a"]] >= 0 and max(probs.values()) < 1
        assert row["judgment_candidate_a"] is None  # nothing generated


def test_forced_choice_prompt_prefills_the_verdict(tiny_judge):
    jp = load_judge_prompt()
    msgs = jp.messages("q", "a", "b", forced=True)
    assert msgs[-1] == {"role": "assistant", "content": "My final verdict: [["}
    assert [label for _, label in jp.choices] == ["A", "B", "C"]
    text = tiny_judge.prompt_text(TeacherRequest("k", msgs))
    assert text.endswith("<|im_start|>assistant\nMy final verdict: [[")
    tok = tiny_judge.loaded.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    conts = [tiny_judge._continuation(ids, text, c) for c in "ABC"]
    assert conts == [[tok.convert_tokens_to_ids(c)] for c in "ABC"]  # one token each


def _exact_logprob(judge: LocalJudge, prompt: str, label: str) -> float:
    """log P(label | prompt) from one unpadded forward pass (the reference computation)."""
    import torch

    tok, model = judge.loaded.tokenizer, judge.loaded.model
    ctx = tok(prompt, add_special_tokens=False)["input_ids"]
    cont = judge._continuation(ctx, prompt, label)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ctx + cont])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))


def test_label_logprobs_batched_equal_one_at_a_time(tiny_judge):
    reqs = [
        TeacherRequest(f"r{i}", [{"role": "user", "content": "short " * (1 + 7 * i)}])
        for i in range(5)
    ]
    single = ["A", "B", "C"]
    multi = [" first answer", " the second one", " equal"]  # several tokens: full sequences
    for labels in (single, multi):
        got = tiny_judge.label_logprobs(reqs, labels)
        for req, row in zip(reqs, got, strict=True):
            prompt = tiny_judge.prompt_text(req)
            want = [_exact_logprob(tiny_judge, prompt, lab) for lab in labels]
            assert row == pytest.approx(want, abs=1e-4)


def test_forced_choice_labels_are_configurable(tmp_path, tiny_judge):
    path = tmp_path / "judge.yaml"
    path.write_text(
        "name: words\n"
        "verdicts: {A: '<A>', B: '<B>', tie: '<TIE>'}\n"
        "forced_choice: {prefill: 'Better:', labels: {A: ' first', B: ' second', tie: ' same'}}\n"
        "system: ''\n"
        "user: 'Q: {question} | one: {answer_a} | two: {answer_b}'\n",
        encoding="utf-8",
    )
    jp = load_judge_prompt(path)
    assert jp.prefill == "Better:" and dict(jp.choices)["tie"] == " same"
    res = judge_pairs(tiny_judge, _items(2), prompt=path)
    assert res["method"] == "logprobs" and res["unparseable"] == 0
    default = tmp_path / "default.yaml"
    default.write_text(path.read_text().replace("forced_choice:", "#"), encoding="utf-8")
    jp = load_judge_prompt(default)  # derived from the verdict tokens: "<" + A / B / TIE
    assert jp.prefill == "My final verdict: <" and dict(jp.choices) == {
        "A": "A",
        "B": "B",
        "tie": "TIE",
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("tie: ' same'", "tie: ' first'"), encoding="utf-8")
    with pytest.raises(ValueError, match="three different"):
        load_judge_prompt(bad)


class LogprobJudge:
    """A forced-choice judge whose label log-probabilities are a function of the prompt."""

    name = "scripted-logprobs"

    def __init__(self, decide: Callable[[str], list[float]]) -> None:
        self.decide = decide
        self.calls = 0

    def label_logprobs(self, requests, labels):
        self.calls += 1
        return [self.decide(r.messages[-2]["content"]) for r in requests]


def _a_is_good(user: str) -> bool:
    a = user.split("[The Start of Assistant A's Answer]")[1].split("[The End")[0]
    return "GOOD" in a


def test_position_bias_cancels_over_both_orders():
    # always prefers A (log-prob margin 2), and a little more so when A is the good answer
    biased = LogprobJudge(lambda u: [-0.2 if _a_is_good(u) else -0.3, -2.3, -5.0])
    res = judge_pairs(biased, _items(4))
    assert biased.calls == 1  # both orders of every pair in one call
    assert res["wins"] == 4 and res["consistency"] == 0.0 and res["inconclusive"] is True
    assert all(r["verdict_candidate_a"] == r["verdict_candidate_b"] == "A" for r in res["rows"])
    tie = LogprobJudge(lambda u: [-3.0, -3.0, -0.1])
    res = judge_pairs(tie, _items(3))
    assert res["ties"] == 3 and res["win_rate"] == 0.5


# ----------------------------------------------------------------------------- endpoints


def _completion(body: dict, text: str, logprobs: list | None) -> dict:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
    }
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@pytest.fixture(scope="module")
def fake_endpoint() -> Iterator[tuple[str, dict]]:
    """A local OpenAI-compatible server; state["handler"](body) -> (status, payload)."""
    state: dict = {"handler": None, "seen": []}
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):  # type: ignore[no-untyped-def]
        body = await request.json()
        state["seen"].append(body)
        status, payload = state["handler"](body)
        return JSONResponse(payload, status)

    with running_app(app) as url:
        yield f"{url}/v1", state


def _openai_judge(base_url: str, **kw) -> OpenAITeacher:
    kw = {"timeout_s": 5, "max_retries": 2, "backoff_s": 0.01, "api_key_env": "CIFT_TEST_KEY"} | kw
    return OpenAITeacher(base_url, "judge-model", name="judge-openai", **kw)


@pytest.mark.parametrize("status", [401, 404, 500])
def test_endpoint_error_after_retries_fails_naming_endpoint_and_status(fake_endpoint, status):
    base_url, state = fake_endpoint
    state["seen"].clear()
    state["handler"] = lambda body: (status, {"error": {"message": "nope", "code": status}})
    with pytest.raises((JudgeError, TeacherUnavailable)) as info:
        judge_pairs(_openai_judge(base_url), _items(2))
    message = str(info.value)
    assert base_url in message and f"HTTP {status}" in message
    calls = len(state["seen"])  # 2 pairs x 2 orders; a 5xx is retried, a 4xx is not
    assert calls == 4 if status != 500 else 4 <= calls <= 12


def _verdict_tokens(text: str, alternatives: dict[str, float]) -> list[dict]:
    """Per-token logprobs of `text` split as "... [[", "X", "]]"; the verdict token's
    alternatives are `alternatives`."""
    head, verdict, tail = re.match(r"(.*\[\[)(.)(\]\].*)", text, re.S).groups()
    return [
        {"token": head, "logprob": -0.1, "top_logprobs": []},
        {
            "token": verdict,
            "logprob": alternatives[verdict],
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in alternatives.items()],
        },
        {"token": tail, "logprob": -0.01, "top_logprobs": []},
    ]


def test_openai_judge_asks_for_logprobs_and_reads_the_verdict_from_them(fake_endpoint):
    base_url, state = fake_endpoint
    state["seen"].clear()

    def handler(body):
        good_first = "GOOD" in body["messages"][-1]["content"].split("Assistant B")[0]
        text = "A restates the format: [[A]], [[B]] or [[C]]. Verdict: [[A]]"
        alts = {"A": -0.4, "B": -1.2, "C": -3.0} if good_first else {"A": -0.9, "B": -0.6}
        if not good_first:
            text = text.replace("Verdict: [[A]]", "Verdict: [[B]]")
        return 200, _completion(body, text, _verdict_tokens(text, alts))

    state["handler"] = handler
    res = judge_pairs(_openai_judge(base_url, top_logprobs=5), _items(3))
    assert all(b["logprobs"] is True and b["top_logprobs"] == 5 for b in state["seen"])
    assert res["method"] == "logprobs" and res["wins"] == 3 and res["consistency"] == 1.0
    probs = res["rows"][0]["probs_candidate_b"]
    assert probs["tie"] == 0.0 and probs["B"] > probs["A"]  # C absent from the alternatives

    state["seen"].clear()
    state["handler"] = lambda body: (200, _completion(body, "Verdict: [[C]]", None))
    res = judge_pairs(_openai_judge(base_url), _items(2))  # no logprobs asked, none returned
    assert "logprobs" not in state["seen"][0]
    assert res["method"] == "text" and res["ties"] == 2 and res["unparseable"] == 0


def test_token_probs_finds_the_last_verdict():
    jp = load_judge_prompt()
    tokens = [
        {"token": "Say [[", "logprob": -0.1},
        {"token": "A", "logprob": -0.1, "top": {"A": -0.1}},
        {"token": "]] then: [[", "logprob": -0.1},
        {"token": "B", "logprob": -0.5, "top": {"B": -0.5, "A": -1.0, "C": -2.0}},
        {"token": "]]", "logprob": -0.01},
    ]
    probs = jp.token_probs("", tokens)
    assert max(probs, key=probs.get) == "B" and probs["tie"] > 0
    assert jp.token_probs("", [{"token": "no verdict", "logprob": -1.0}]) is None


# ----------------------------------------------------------------------------- calibration


def test_planted_pairs_have_every_corruption_kind():
    kb = load_kb("medical")
    items = planted_pairs(kb, 8, 0, STYLES)
    assert [it["kind"] for it in items] == list(KINDS) * 2
    assert items == planted_pairs(kb, 8, 0, STYLES)  # deterministic
    for it in items:
        good, bad = it["candidate"], it["baseline"]
        assert good != bad and it["reference"].startswith("1. ")
        assert it["question"] and "Diagnosis:" not in it["question"]
        dx_good = re.search(r"^Diagnosis: (.*)$", good, re.M)[1]
        dx_bad = re.search(r"^Diagnosis: (.*)$", bad, re.M)[1]
        assert dx_good == it["condition"]
        steps = lambda text: [s for s in text.splitlines() if re.match(r"\d+\. ", s)]  # noqa: E731
        if it["kind"] == "wrong_diagnosis":
            assert dx_bad != dx_good and kb.normalise(dx_bad) is not None
        else:
            assert dx_bad == dx_good
        if it["kind"] == "invented_finding":
            added = [s for s in steps(bad) if "also shows" in s]
            assert len(added) == 1 and len(steps(bad)) == len(steps(good)) + 1
        if it["kind"] == "missing_referral":
            assert kb.by_name(it["condition"]).urgent
            assert "emergency" in good.lower() and "emergency" not in bad.lower()
            assert bad.endswith(ROUTINE_ADVICE)
        if it["kind"] == "cut_short":
            assert len(steps(bad)) == 3 < len(steps(good))


def test_invented_finding_is_unfaithful_to_the_record():
    import random

    from cift.data.records import sample_record
    from cift.data.reference import reference_answer
    from cift.evaluate.calibrate import _invented_finding

    kb = load_kb("medical")
    rng = random.Random(3)
    record = sample_record(kb, "Influenza", rng, record_id="x", batch="t")
    good = reference_answer(kb, record)
    bad = _invented_finding(kb, record, good, rng)
    assert not faithfulness_violations(good["steps"], record, kb)
    assert faithfulness_violations(bad["steps"], record, kb)


def _oracle(items: list[dict]) -> Callable[[str], str]:
    good = {it["candidate"] for it in items}

    def decide(user: str) -> str:
        a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
        return "[[A]]" if a in good else "[[B]]"

    return decide


class TextJudge:
    name = "scripted-text"

    def __init__(self, decide: Callable[[str], str]) -> None:
        self.decide = decide

    def generate(self, requests, sampling):
        return [TeacherReply(r.key, self.decide(r.messages[-1]["content"]), 1, 1) for r in requests]


def test_calibrate_scores_oracle_tie_and_position_biased_judges():
    items = planted_pairs(load_kb("medical"), 8, 0, STYLES)
    oracle = calibrate(TextJudge(_oracle(items)), items)
    assert set(SUMMARY_KEYS) - {"min_calibration"} <= set(oracle)
    assert oracle["pairs"] == 8 and oracle["accuracy"] == 1.0 and oracle["tie_rate"] == 0.0
    assert oracle["position_bias"] == 0.0 and oracle["judge"] == "scripted-text"
    assert set(oracle["by_kind"]) == set(KINDS) and oracle["reference_guided"] is True
    assert calibration_note(oracle["accuracy"], 0.75) is None

    tie = calibrate(TextJudge(lambda user: "[[C]]"), items)
    assert tie["accuracy"] == 0.0 and tie["tie_rate"] == 1.0
    assert calibration_note(tie["accuracy"], 0.75) == "uninformative (calibration 0.00)"
    first = calibrate(TextJudge(lambda user: "[[A]]"), items)
    assert first["accuracy"] == 0.0 and first["position_bias"] == 1.0
    forced_tie = calibrate(LogprobJudge(lambda u: [-2.0, -2.0, -0.1]), items)
    assert forced_tie["accuracy"] == 0.0 and forced_tie["method"] == "logprobs"


def test_calibration_is_cached_per_judge_config(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFT_CACHE_DIR", str(tmp_path))
    cfg = compose(["profile=tiny", "judge.calibration.pairs=4"])
    tie = TextJudge(lambda user: "[[C]]")
    first = judge_calibration(cfg, tie)
    assert first["accuracy"] == 0.0 and first["informative"] is False
    assert first["min_calibration"] == 0.75 and first["pairs"] == 4
    cached = list((tmp_path / "judge_calibration").glob("*.json"))
    assert len(cached) == 1

    def boom(user):
        raise AssertionError("a cached calibration judges nothing")

    assert judge_calibration(cfg, TextJudge(boom))["accuracy"] == 0.0
    other = compose(["profile=tiny", "judge.calibration.pairs=4", "judge.calibration.seed=1"])
    items = planted_pairs(load_kb(other.data.kb), 4, 1, list(other.data.styles))
    assert judge_calibration(other, TextJudge(_oracle(items)))["informative"] is True
    assert len(list((tmp_path / "judge_calibration").glob("*.json"))) == 2
    lenient = compose(["profile=tiny", "judge.calibration.pairs=4", "judge.min_calibration=0"])
    assert judge_calibration(lenient, TextJudge(boom))["informative"] is True  # same cache

    import cift.evaluate.build as build

    monkeypatch.setattr(build, "build_judge", lambda cfg: tie)
    judge, summary, note = judge_status(cfg)
    assert judge is None and note == "uninformative (calibration 0.00)"
    assert set(summary) == set(SUMMARY_KEYS)


def test_cli_judge_calibrate_prints_json_last(tmp_path, monkeypatch, capsys):
    import cift.evaluate.build as build
    from cift.cli import main

    monkeypatch.setenv("CIFT_CACHE_DIR", str(tmp_path))
    built = []

    def build_judge(cfg):  # the configured judge, scripted: always "tie"
        built.append(cfg)
        return TextJudge(lambda user: "[[C]]") if cfg.judge.backend else None

    monkeypatch.setattr(build, "build_judge", build_judge)
    args = ["judge", "calibrate", "-S", "profile=tiny", "-S", "judge.calibration.pairs=4"]
    with pytest.raises(SystemExit) as code:
        main(args)
    assert code.value.code == 0 and built[0].judge.calibration.pairs == 4  # -S reached it
    out, err = capsys.readouterr()
    last = json.loads(out.strip().splitlines()[-1])
    assert set(last) == set(SUMMARY_KEYS) and last["pairs"] == 4
    assert last["accuracy"] == 0.0 and last["tie_rate"] == 1.0 and last["judge"] == "scripted-text"
    assert "by_kind" in json.loads(err.strip().splitlines()[-1])
    with pytest.raises(SystemExit) as code:
        main(["judge", "calibrate", "-S", "judge=none"])
    assert code.value.code == 1


# ----------------------------------------------------------------------------- gate


GOOD_JUDGE = {
    "n": 20,
    "wins": 10,
    "losses": 4,
    "ties": 6,
    "win_rate": 0.65,
    "win_rate_ci": [0.5, 0.8],
    "consistency": 0.8,
}
LOSING_JUDGE = {**GOOD_JUDGE, "wins": 1, "losses": 15, "win_rate": 0.2, "win_rate_ci": [0.1, 0.3]}


def _model(b1: float, b2: float, n: int = 100) -> dict:
    """Per-case validation scores (the first round(p * n) cases right) for the gate."""

    def cases(p: float) -> dict[str, float]:
        return {f"c{i:03d}": float(i < round(p * n)) for i in range(n)}

    return {"val_scores": {"b1": cases(b1), "b2": cases(b2)}, "safety_violations": 0}


def test_gate_records_an_uncalibrated_judge_as_uninformative():
    kw = {"batch": "b2", "min_calibration": 0.75}
    out = gate_decision(_model(0.8, 0.9), _model(0.8, 0.6), judge=LOSING_JUDGE, **kw)
    assert out["promote"] is False and out["terms"]["judge"]["status"] == "fail"  # uncalibrated
    out = gate_decision(
        _model(0.8, 0.9), _model(0.8, 0.6), judge=LOSING_JUDGE, judge_calibration=0.9, **kw
    )
    assert out["promote"] is False and out["terms"]["judge"]["status"] == "fail"
    out = gate_decision(
        _model(0.8, 0.9), _model(0.8, 0.6), judge=LOSING_JUDGE, judge_calibration=0.4, **kw
    )
    assert out["terms"]["judge"] == "uninformative (calibration 0.40)"
    assert out["promote"] is True and out["reasons"] == []
    assert "judge uninformative (calibration 0.40): term left out" in out["notes"]
    assert set(out["terms"]) == {"accuracy", "forgetting", "safety", "judge"}
    out = gate_decision(_model(0.8, 0.5), _model(0.8, 0.6), judge_calibration=0.4, **kw)
    assert out["promote"] is False and out["terms"]["judge"].startswith("uninformative")


def test_general_judge_sees_instruction_and_input():
    from cift.evaluate.judge import pair_items

    heldout = [
        {"id": "g1", "instruction": "Summarise the text.", "input": "The cat sat.", "output": "x"},
        {"id": "g2", "instruction": "Name a colour.", "input": ""},
    ]
    items = pair_items(heldout, {"g1": "c1", "g2": "c2"}, {"g1": "b1", "g2": "b2"}, False)
    assert items[0]["question"] == "Summarise the text.\n\nThe cat sat."
    assert items[1]["question"] == "Name a colour." and items[0]["reference"] is None
    seen = []
    judge_pairs(TextJudge(lambda user: seen.append(user) or "[[C]]"), items)
    assert "The cat sat." in seen[0] and "Reference Answer" not in seen[0]
    assert pair_items(heldout[:1], {"g1": "c"}, {"g1": "b"})[0]["reference"] == "x"
