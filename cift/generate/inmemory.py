"""Every held-out set and batch split of a run, computed in memory in DAG order without a
teacher: what the global_test stage and each generate@<i> write (the leak tests measure it)."""

from __future__ import annotations

from omegaconf import DictConfig

from cift.generate.batches import (
    Contamination,
    batch_splits,
    global_test,
    heldout_entries,
    synthetic_records,
    table1_test,
)
from cift.generate.probe import probe_set
from cift.kb import KnowledgeBase


def synthetic_splits(
    cfg: DictConfig, kb: KnowledgeBase, check: Contamination | None = None
) -> dict:
    """The global test set and every synthetic batch's splits, computed in memory in DAG order.

    What global_test and generate@<i> write, without a teacher: each batch sees the held-out
    entries of the global and Table 1 test sets, the probe set and the batches before it (tests,
    measurements)."""
    check = check or Contamination(cfg, kb)
    all_records = synthetic_records(cfg, kb)
    gtest = global_test(cfg, kb, check=check)["test"]
    t1 = table1_test(cfg, kb, check=check)["test"]
    heldout = heldout_entries(gtest, "global_test", check.text)
    heldout += heldout_entries(t1, "table1_test", check.text)
    heldout += probe_set(cfg, kb, check)["heldout"]
    batches: dict[str, dict] = {}
    for name in all_records:
        split = batch_splits(cfg, kb, name, heldout, all_records=all_records, check=check)
        batches[name] = split
        heldout = heldout + [
            e for s in ("val", "test") for e in heldout_entries(split[s], s, check.text)
        ]
    return {"global_test": gtest, "table1_test": t1, "batches": batches, "heldout": heldout}
