"""The report's figures: PNGs for the HTML page and the data rows `dvc plots` draws from."""

from __future__ import annotations

from pathlib import Path

from cift.io.jsonl import write_json_atomic


def figure():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    """Atomic like every other output: a killed run never leaves half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(path)


def accuracy_rows(batches: list[str], continual: dict | None) -> list[dict]:
    """Per batch i: the base, production right after batch i, and final production on its test.
    `batch_index` (1, 2, ...) is the x axis `dvc plots` draws: batch names are categories, and
    a quantitative axis over strings draws nothing."""
    if not continual or not continual.get("R"):
        return []
    R = continual["R"]
    return [
        {
            "batch_index": i + 1,
            "batch": b,
            "base": R[0][i],
            "after_batch": R[i + 1][i],
            "final": R[-1][i],
        }
        for i, b in enumerate(batches)
    ]


def cost_rows(table1: dict, ablations: dict | None) -> list[dict]:
    rows = [
        {"arm": arm, "train_tokens": r["train_tokens"], "accuracy": r["accuracy"]}
        for arm, r in table1.items()
        if isinstance(r, dict) and r.get("train_tokens") is not None
    ]
    for r in (ablations or {}).get("table1_arms", []):
        rows.append({k: r.get(k) for k in ("arm", "train_tokens", "accuracy")})
    return rows


def write_plots(
    out: Path,
    batches: list[str],
    continual: dict | None,
    ifd: list[dict],
    cost: list[dict],
    ifd_pairs: list[dict] | None = None,
) -> list[Path]:
    """accuracy_per_batch, ifd_static_vs_dynamic, cost_vs_accuracy: .png + .json rows each;
    ifd_pairs.json: each candidate's static and dynamic IFD (dvc.yaml's scatter of the two)."""
    plt = figure()
    written = []
    acc = accuracy_rows(batches, continual)
    write_json_atomic(out / "accuracy_per_batch.json", acc)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("base", "base"), ("after_batch", "after batch i"), ("final", "final")):
        ax.plot([r["batch"] for r in acc], [r[key] for r in acc], marker="o", label=label)
    ax.set(xlabel="batch (its test split)", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.set_title("Accuracy per batch")
    ax.legend()
    save_png(fig, out / "accuracy_per_batch.png")
    written.append(out / "accuracy_per_batch.png")
    plt.close(fig)

    write_json_atomic(out / "ifd_static_vs_dynamic.json", ifd)
    write_json_atomic(out / "ifd_pairs.json", ifd_pairs or [])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    positions, data, colors = [], [], []
    for i, b in enumerate(batches):
        for j, proxy in enumerate(("static", "dynamic")):
            values = [r["ifd"] for r in ifd if r["batch"] == b and r["proxy"] == proxy]
            if values:
                positions.append(i * 3 + j)
                data.append(values)
                colors.append("tab:orange" if proxy == "static" else "tab:blue")
    if data:
        parts = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True)
        for patch, color in zip(parts["boxes"], colors, strict=True):
            patch.set_facecolor(color)
    ax.set_xticks([i * 3 + 0.5 for i in range(len(batches))], batches)
    ax.set(ylabel="IFD", title="IFD per batch: static (orange) vs dynamic (blue) proxy")
    save_png(fig, out / "ifd_static_vs_dynamic.png")
    written.append(out / "ifd_static_vs_dynamic.png")
    plt.close(fig)

    write_json_atomic(out / "cost_vs_accuracy.json", cost)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    markers = "osD^vP*X"
    for i, r in enumerate(cost):  # a legend, not labels: arms of equal cost sit on one point
        ax.scatter(
            r["train_tokens"], r["accuracy"], marker=markers[i % len(markers)], label=r["arm"]
        )
    ax.set(
        xlabel="tokens the optimiser saw", ylabel="global-test accuracy", title="Cost vs accuracy"
    )
    if cost:
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    save_png(fig, out / "cost_vs_accuracy.png")
    written.append(out / "cost_vs_accuracy.png")
    plt.close(fig)
    return written
