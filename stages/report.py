"""DVC stage `report`: reports/{summary,table1,proxy_ablation}.json, reports/plots/ and
reports/report.html from the run's metrics files (the proxy ablation counts redundant
selections with MiniLM; no LLM runs here).

Usage: python stages/report.py
"""

from __future__ import annotations

import json


def main() -> None:
    from cift.config import load_params
    from cift.report.build import write_reports

    reports = write_reports(load_params())
    s, p = reports["summary"], reports["proxy_ablation"]
    print(
        json.dumps(
            {
                "promotions": s["promotions"],
                "final_production": s["final_production"],
                "ACC": s["ACC"],
                "wall_seconds": s["wall_seconds"],
                "redundant": {k: v["redundant_selected"] for k, v in p.items()},
                "repeats": {k: v["repeats_selected"] for k, v in p.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
