"""The run's reports: summary, Table 1, the proxy ablation, plots and one HTML page."""
