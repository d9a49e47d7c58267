"""The probe set from the run config: patients' own words over the domain's conditions, kept
apart from training in both directions (the global_test stage's second output).

Candidates (`cift.data.probe.probe_records`) whose message near-duplicates a training record's
input are dropped (the contamination rule, with the message as the probe's text), and the kept
messages join the held-out chain (data/heldout/base.jsonl), so no batch trains on a record close
to one. Each probe is a reference sample like the global test set's, with its gold condition at
the top level and the instruction `cift eval-file` wraps free text in, so the continual stage
and `cift eval-file --text-field input --label-field gold` ask the model the same prompt.
"""

from __future__ import annotations

from omegaconf import DictConfig

from cift.data.probe import probe_records
from cift.data.reference import reference_answer
from cift.data.render import CASE_INSTRUCTION
from cift.data.sample import record_sample
from cift.data.splits import contamination_filter
from cift.generate.batches import Contamination, heldout_entries, training_records
from cift.kb import KnowledgeBase

PROBE_STYLE = "probe"  # meta.style of a probe sample


def probe_sample(record: dict, kb: KnowledgeBase) -> dict:
    """A probe record as a reference sample: its message as input, the KB's answer as output."""
    task = {"style": PROBE_STYLE, "instruction": CASE_INSTRUCTION, "input": record["message"]}
    sample = record_sample(
        record,
        task,
        reference_answer(kb, record),
        sample_id=record["id"],
        source="reference",
        teacher="kb_reference",
    )
    return {**sample, "gold": record["condition"]}


def probe_set(cfg: DictConfig, kb: KnowledgeBase, check: Contamination | None = None) -> dict:
    """{"samples", "heldout", "contamination": {"dropped", "rate"}}: `data.probe_records`
    probes that near-duplicate no batch's training record (candidates drawn in growing rounds;
    ids "p-0001"... in the order kept)."""
    n = int(cfg.data.probe_records)
    check = check or Contamination(cfg, kb)
    train = training_records(cfg, kb)
    rule = check.rule

    def text(r: dict) -> str:  # a probe is read as its message, a training record as rendered
        return r["message"] if "message" in r else check.text(r)

    kept: list[dict] = []
    dropped: list[dict] = []
    size = n
    for _ in range(4):  # n, then 2n, 4n, 8n candidates (each a prefix of the next)
        if len(kept) >= n:
            break
        seen = len(kept) + len(dropped)
        fresh = probe_records(kb, size, int(cfg.seed))[seen:]
        ok, bad, _ = contamination_filter(
            train,
            fresh,
            texts_fn=text,
            embed_fn=check.embed,
            cosine=rule.cosine,
            ngram=rule.ngram,
            ngram_overlap=rule.ngram_overlap,
        )
        kept, dropped, size = kept + ok, dropped + bad, size * 2
    kept = kept[:n]
    for i, r in enumerate(kept):
        r["id"] = f"p-{i + 1:04d}"
    examined = len(kept) + len(dropped)
    return {
        "samples": [probe_sample(r, kb) for r in kept],
        "heldout": heldout_entries(kept, PROBE_STYLE, lambda r: r["message"]),
        "contamination": {"dropped": dropped, "rate": len(dropped) / max(examined, 1)},
    }
