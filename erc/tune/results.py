"""What a search leaves for a person: the trials table (``trials.csv`` and printed), the
best trial as a ready-to-use training config (``best_config.yaml``), the plots
(``history.png``: optimisation history; ``importance.png``: parameter importance) and
``report.html`` holding all of them."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from erc import io
from erc.markup import esc
from erc.redaction import clip
from erc.train.loop import HELD_OUT
from erc.tune.space import METRIC, REPORT_ROLE, SearchSpec


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


def is_point(params: dict, point: dict) -> bool:
    return set(params) == set(point) and all(_same(params[k], point[k]) for k in point)


def trial_index(trial_id: str, path: str = "") -> int:
    """The trial's number in creation order (1, 2, ...): Tune puts it after the trial id in
    the trial's folder name (``train_trial_<id>_<n>_<params>``)."""
    match = re.search(rf"_{re.escape(trial_id or '')}_(\d+)", Path(str(path)).name)
    return int(match.group(1)) if match else -1


def collect(result_grid, spec: SearchSpec) -> list[dict]:
    """One row per trial of a Tune ResultGrid, in creation order."""
    default = spec.default_point() if spec.search.include_default and spec.params else None
    rows = []
    for result in result_grid:
        metrics = result.metrics or {}
        params = {k: result.config.get(k) for k in spec.params} if result.config else {}
        trial_id = metrics.get("trial_id")
        if not trial_id:
            match = re.search(r"^[A-Za-z_]*?_([0-9a-f]{5,})_\d+_", Path(str(result.path)).name)
            trial_id = match.group(1) if match else Path(str(result.path)).name
        values = spec.trial_values(params)
        planned = int(values["epochs"])
        history = result.metrics_dataframe
        best_epoch = None
        if history is not None and len(history) and "dev_weighted_f1" in history:
            # counted from 1, as epochs_run and every line of training are
            best_epoch = int(history.loc[history["dev_weighted_f1"].idxmax(), "epoch"]) + 1
        done = int(metrics["epoch"]) + 1 if "epoch" in metrics else 0
        if result.error is not None:
            status = "error"
        elif done >= planned:
            status = "completed"
        elif metrics.get("stopped_early"):
            status = "early stop"
        else:
            status = "ASHA stop"
        rows.append({
            "trial": trial_index(trial_id, result.path), "trial_id": trial_id, "status": status,
            "default": bool(default is not None and is_point(params, default)),
            **params,
            METRIC: metrics.get(METRIC), "best_epoch": best_epoch,
            HELD_OUT: metrics.get(HELD_OUT),  # reported only: nothing ranks trials by it
            "last_dev_weighted_f1": metrics.get("dev_weighted_f1"),
            "epochs_run": done, "epochs_planned": planned,
            "seconds": round(float(metrics.get("time_total_s", 0.0)), 1),
            "error": clip((str(result.error).strip().splitlines() or [""])[-1], 200)
            if result.error is not None else "",
        })
    rows.sort(key=lambda r: (r["trial"], r["trial_id"]))
    return rows


def best_row(rows: list[dict]) -> dict | None:
    scored = [r for r in rows if r["status"] != "error" and r.get(METRIC) is not None]
    return max(scored, key=lambda r: r[METRIC]) if scored else None


def default_row(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["default"]), None)


def outcome_lines(best: dict | None, default: dict | None, roles: dict[str, str]) -> list[str]:
    """The search's outcome, each figure with its split: the best trial (chosen on dev) and
    the untuned default, on dev and on the held-out report split, and the gain on each."""
    dev, report = roles.get("dev", "dev"), roles.get(REPORT_ROLE)
    if best is None:
        return []

    def figures(row: dict) -> str:
        text = f"dev {dev!r} weighted F1 {row[METRIC]:.4f}"
        if report is not None:
            text += f", held-out {report!r} weighted F1 {_fmt(row.get(HELD_OUT))}"
        return text

    lines = [f"best (chosen on dev {dev!r}): {best['trial_id']}, {figures(best)} "
             f"(epoch {best['best_epoch']})"]
    if default is not None and default.get(METRIC) is not None:
        lines.append(f"untuned default: {default['trial_id']}, {figures(default)}")
        gain = f"tuned - default: {best[METRIC] - default[METRIC]:+.4f} on dev {dev!r} (chosen on it)"
        if report is not None and None not in (best.get(HELD_OUT), default.get(HELD_OUT)):
            gain += f", {best[HELD_OUT] - default[HELD_OUT]:+.4f} on held-out {report!r}"
        lines.append(gain)
    if report is None:
        lines.append(f"no held-out figure (no report split named, and no labelled test split "
                     f"besides train and dev): every figure here is on dev {dev!r}, the split the "
                     f"search chose on")
    return lines


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.2e}"
    return str(value)


def format_table(rows: list[dict], spec: SearchSpec,
                 roles: Mapping[str, str] | None = None) -> str:
    """The trials as a text table; its score columns are headed by their splits (``roles``:
    with --select-fraction the search chooses on 'select', and the corpus's dev is held out)."""
    held_out = [HELD_OUT] if any(r.get(HELD_OUT) is not None for r in rows) else []
    columns = ["trial", "status", METRIC, *held_out, "best_epoch", "epochs_run", "seconds",
               *spec.params]
    roles = roles or {}
    heads = {"trial": "#", METRIC: f"{roles.get('dev', 'dev')} wF1",
             HELD_OUT: f"held-out {roles[REPORT_ROLE]} wF1" if roles.get(REPORT_ROLE) else "held-out wF1",
             "best_epoch": "best ep", "epochs_run": "epochs", "seconds": "s"}
    best = best_row(rows)
    cells = [[heads.get(c, c) for c in columns] + [""]]
    for r in rows:
        mark = ("best" if best is r else "") + (" default" if r["default"] else "")
        cells.append([f"{r[c]:.0f}" if c == "seconds" else _fmt(r.get(c)) for c in columns]
                     + [mark.strip()])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def write_csv(rows: list[dict], path: Path) -> Path:
    import csv
    import io as text_io

    columns = list(rows[0]) if rows else ["trial", "trial_id", "status", METRIC]
    buffer = text_io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, buffer.getvalue())
    return path


def write_best_config(rows: list[dict], spec: SearchSpec, path: Path,
                      command: str | None = None, note: str = "",
                      roles: Mapping[str, str] | None = None) -> dict | None:
    """The best trial's options (every option of ``erc train <family>``: defaults, fixed
    values, the best sampled ones) as YAML for ``erc train <family> --config``; the header's
    figures name their splits, as outcome_lines does (with --select-fraction the corpus's
    dev split is the held-out one)."""
    best = best_row(rows)
    if best is None:
        return None
    values = spec.trial_values({k: best[k] for k in spec.params})
    if spec.family == "fusion":  # the search made its choices: the config trains its model as is
        values["choose_speaker_pool"] = False
    dev, report = (roles or {}).get("dev", "dev"), (roles or {}).get(REPORT_ROLE)
    header = [f"erc tune: the best of {len(rows)} trials ({best['trial_id']}): dev {dev!r} "
              f"weighted F1 {best[METRIC]:.4f} at epoch {best['best_epoch']} (chosen on it)"]
    default = default_row(rows)
    if default is not None and default.get(METRIC) is not None:
        header.append(f"untuned default ({default['trial_id']}): {default[METRIC]:.4f}")
    if best.get(HELD_OUT) is not None:
        header.append(f"held-out {report or 'report'!r} weighted F1 (chosen on nothing): "
                      f"best {best[HELD_OUT]:.4f}" + (
            f", untuned default {default[HELD_OUT]:.4f}"
            if default is not None and default.get(HELD_OUT) is not None else ""))
    if note:
        header.append(note)
    header.append(f"train with:  {command}" if command else
                  f"train with:  erc train {spec.family} CORPUS ... --config {path.name}")
    text = "".join(f"# {line}\n" for line in header)
    io.write_text(path, text + yaml.safe_dump(values, sort_keys=False))
    return values


# -- plots ----------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(rows: list[dict], path: Path) -> Path:
    """Every trial's best dev weighted F1 in creation order, and the best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    markers = {"completed": ("o", "tab:blue"), "early stop": ("s", "tab:cyan"),
               "ASHA stop": ("x", "tab:gray"), "error": ("X", "tab:red")}
    for status, (marker, color) in markers.items():
        pts = [(r["trial"], r[METRIC]) for r in rows if r["status"] == status and r.get(METRIC) is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=color, label=status, zorder=3)
    running, best_x, best_y = -math.inf, [], []
    for r in rows:
        if r.get(METRIC) is not None and r["status"] != "error":
            running = max(running, r[METRIC])
        if running > -math.inf:
            best_x.append(r["trial"])
            best_y.append(running)
    if best_x:
        ax.step(best_x, best_y, where="post", color="tab:orange", label="best so far")
    default = default_row(rows)
    if default is not None and default.get(METRIC) is not None:
        ax.axhline(default[METRIC], color="tab:green", ls="--", lw=1, label="untuned default")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (creation order)")
    ax.set_ylabel("dev weighted F1 (best epoch)")
    ax.set_title("optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def importances(rows: list[dict], spec: SearchSpec) -> tuple[dict[str, float], str]:
    """(importance per parameter, method). Optuna's evaluator (PED-ANOVA) on the scored
    trials; with too few trials for it, |Spearman rho| of each parameter with the score;
    with fewer than 3 scored trials, nothing."""
    import optuna

    scored = [r for r in rows if r["status"] != "error" and r.get(METRIC) is not None]
    searched = list(spec.params)
    if len(scored) < 3 or not searched:
        return {}, f"too few scored trials ({len(scored)}) for parameter importance"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    dists = {n: p.optuna() for n, p in spec.params.items()}
    for r in scored:
        study.add_trial(optuna.trial.create_trial(
            params={n: r[n] for n in searched}, distributions=dists, value=float(r[METRIC])))
    if len(scored) >= 5:
        try:
            values = optuna.importance.get_param_importances(study)
            if values and all(math.isfinite(v) for v in values.values()):
                return dict(values), "optuna.importance (PED-ANOVA)"
        except Exception as err:  # too few or too uniform trials for the evaluator
            reason = f"optuna.importance failed ({type(err).__name__})"
        else:
            reason = "optuna.importance gave nothing"
    else:
        reason = f"{len(scored)} scored trials"
    from scipy.stats import spearmanr

    score = [r[METRIC] for r in scored]
    out = {}
    for name in searched:
        xs = [r[name] for r in scored]
        if spec.params[name].distribution == "choice":
            order = {v: i for i, v in enumerate(spec.params[name].args)}
            xs = [order.get(x, -1) for x in xs]
        rho = spearmanr(xs, score).statistic if len(set(map(str, xs))) > 1 else 0.0
        out[name] = 0.0 if rho is None or not math.isfinite(rho) else abs(float(rho))
    return dict(sorted(out.items(), key=lambda kv: -kv[1])), f"|Spearman rho| with the score ({reason})"


def plot_importance(values: dict[str, float], method: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(values) + 1.2)))
    if values:
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, method, ha="center", va="center", wrap=True)
    ax.set_title(f"parameter importance\n{method}", fontsize=9)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_report(rows: list[dict], spec: SearchSpec, path: Path, files: dict[str, Path],
                 summary: list[str]) -> Path:
    """``report.html`` at ``path``: summary, the plots (embedded) and the trials table."""
    def image(path: Path) -> str:
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{path.name}">'

    columns = [c for c in rows[0] if c != "trial_id"] if rows else []
    table = "<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
    best = best_row(rows)
    for r in rows:
        style = ' class="best"' if r is best else ""
        table += f"<tr{style}>" + "".join(f"<td>{esc(_fmt(r.get(c)))}</td>"
                                           for c in columns) + "</tr>"
    table += "</table>"
    config = files.get("best_config")
    body = [f"<h1>erc tune: {esc(spec.family)} ({len(rows)} trials)</h1>",
            "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in summary) + "</ul>",
            image(files["history"]), image(files["importance"]), "<h2>trials</h2>", table]
    if config is not None and config.is_file():
        body += [f"<h2>{esc(config.name)}</h2>", f"<pre>{esc(config.read_text())}</pre>"]
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>erc tune</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #ccc;padding:2px 6px}tr.best{background:#ffe9b3}"
            "img{max-width:48%;margin:4px}</style></head><body>" + "\n".join(body) +
            "</body></html>")
    io.write_text(path, page)
    return path
