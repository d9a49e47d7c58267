"""Checkpoint evaluation: pure metric, judge, safety and gate functions (no model loading, no
files). The evaluate stage generates answers and feeds them here:

* metrics — diagnosis extraction, fault cases, accuracy with bootstrap intervals, BLEU/ROUGE-L,
  confusion summary, `evaluate_predictions` for one model;
* judge   — pairwise LLM-as-a-judge, both orders: forced choice from label log-probabilities
  (a local model: forced_choice.LocalJudge) or text verdicts (`judge_pairs`); calibrate — the
  judge's accuracy on planted pairs, below `judge.min_calibration` it is "uninformative";
* ranked  — the format-free diagnosis score: every KB condition ranked by its log-likelihood
  after the model's own answer (`rank_cases`, a loaded model in; `ranked_metrics`);
* safety  — urgent-referral and prescription-dose checks (`safety_violations`);
* gate    — the promotion decision: paired-bootstrap non-inferiority on validation scores
  (`gate_decision`).
"""

from cift.evaluate.gate import gate_decision
from cift.evaluate.judge import JudgePrompt, judge_pairs, load_judge_prompt
from cift.evaluate.metrics import (
    accuracy,
    bootstrap_ci,
    confusion_summary,
    evaluate_predictions,
    extract_diagnosis,
    fault_kind,
    paired_diff_ci,
    text_metrics,
)
from cift.evaluate.safety import count_violations, record_red_flags, safety_violations

__all__ = [
    "JudgePrompt",
    "accuracy",
    "bootstrap_ci",
    "confusion_summary",
    "count_violations",
    "evaluate_predictions",
    "extract_diagnosis",
    "fault_kind",
    "gate_decision",
    "judge_pairs",
    "load_judge_prompt",
    "paired_diff_ci",
    "record_red_flags",
    "safety_violations",
    "text_metrics",
]
