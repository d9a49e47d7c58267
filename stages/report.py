"""DVC stage `report`: reports/{summary,table1,proxy_ablation}.json, reports/plots/ and
reports/report.html from the run's metrics files (the proxy ablation counts redundant
selections with MiniLM and reads the known selections stage known@<i> ranked; no LLM runs
here). Its W&B run holds Table 1, R and the proxy ablation
as tables, the figures as images and the headline numbers in its summary.

Usage: python stages/report.py
"""

from __future__ import annotations

import json


def main() -> None:
    from pathlib import Path

    from cift.config import load_params
    from cift.report.build import write_reports
    from cift.tracking import stage_run, tracking_on

    cfg = load_params()
    reports = write_reports(cfg)
    if tracking_on(cfg):
        from cift.report.wandb_log import log_report

        folder = Path(cfg.paths.reports)
        path = folder / "continual.json"
        continual = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        batches = [b.name for b in cfg.data.batches]
        with stage_run(cfg, "report") as run:
            log_report(run, reports, continual, batches, folder / "plots")
    s, p = reports["summary"], reports["proxy_ablation"]
    print(
        json.dumps(
            {
                "promotions": s["promotions"],
                "final_production": s["final_production"],
                "ACC": s["ACC"],
                "wall_seconds": s["wall_seconds"],
                "redundant": {m: p[m]["redundant_selected"] for m in ("static", "dynamic")},
                "repeats": {m: p[m]["repeats_selected"] for m in ("static", "dynamic")},
                "known": {m: p[m]["known_selected"] for m in ("static", "dynamic")},
                "known_claim": p["dynamic_vs_static"]["claim"]["verdict"],
            }
        )
    )


if __name__ == "__main__":
    main()
