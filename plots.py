"""The paper's figures from finished runs: each method's scores across tasks (Fig. 3), score against complexity
(Fig. 4), score against cost in tokens and seconds (Fig. 5), and the training curves of train_sft.py / train_dpo.py.

    python steer.py compare runs/codesteer runs/all_code runs/only_question --plots runs/figures
    python steer.py compare runs/codesteer runs/all_code --plots runs/figures --training runs/sft runs/dpo
    python steer.py compare runs/a runs/b --common-tasks --plots runs/figures   # runs over different task sets

Each figure is a function of data already loaded (report.load_runs' summaries, load_training's rows) that writes one
PNG and returns its path. What a figure shows is decided by its *_series function, a plain dict that the tests check
against hand-computed numbers; the plot_* function only draws it. matplotlib (pip install -e ".[plot]") is imported
when a figure is drawn, so steer.py runs without it.
"""
from pathlib import Path

import numpy as np

from jsonl import read_jsonl
from report import normalized_averages, shared_tasks

DPI = 120
# metric in metrics.jsonl -> (panel title, y label, scale); the reward panels appear when a run logged them (DPO)
TRAINING_PANELS = {"loss": ("Training loss", "loss (nats)", 1),
                   "reward_margin": ("DPO reward margin", "chosen - rejected reward (β · log-ratio)", 1),
                   "reward_accuracy": ("DPO reward accuracy", "pairs with chosen > rejected (%)", 100)}


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), or a clear stop when it is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit('matplotlib is not installed, so no figures can be drawn: pip install -e ".[plot]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def load_training(train_dirs: list[str]) -> dict[str, list[dict]]:
    """{run folder name: its metrics.jsonl rows} for train_sft.py / train_dpo.py --out folders."""
    names = [Path(train_dir).name for train_dir in train_dirs]
    labels = names if len(set(names)) == len(names) else train_dirs   # two runs named 'dpo' in different folders
    runs = {}
    for label, train_dir in zip(labels, train_dirs):
        path = Path(train_dir) / "metrics.jsonl"
        if not path.is_file():
            raise SystemExit(f"--training {train_dir}: no metrics.jsonl here (give the --out folder of train_sft.py "
                             "or train_dpo.py)")
        rows = []
        try:
            for where, row in read_jsonl(path):
                if "step" not in row or "loss" not in row:
                    raise SystemExit(f"--training {where}: not a metrics row (no step or loss)")
                rows.append(row)
        except ValueError as error:
            raise SystemExit(f"--training {error}") from None
        if not rows:
            raise SystemExit(f"--training {train_dir}: {path} holds no step yet")
        runs[label] = rows
    return runs


def write_figures(summaries: dict[str, dict], training_runs: dict[str, list[dict]], out: Path) -> list[Path]:
    """Every figure into out: score_vs_complexity.png only when some run swept complexity (a note says so
    otherwise), training_curves.png only for training runs."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--plots {out} is a file; it names the folder for the figures")
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_score_distribution(summaries, out)]
    swept = plot_score_vs_complexity(summaries, out)
    if swept:
        paths.append(swept)
    else:
        print("note: no run swept complexity (steer.py --complexity 1-5), so there is no score_vs_complexity.png")
    paths.append(plot_score_vs_cost(summaries, out))
    if training_runs:
        paths.append(plot_training_curves(training_runs, out))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# What each figure shows

def score_distribution_series(summaries: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Fig. 3: {method: {task: score x100}} over the tasks every run has."""
    tasks = shared_tasks(summaries)
    return {method: {task: 100 * summary["tasks"][task]["score"] for task in tasks}
            for method, summary in summaries.items()}


def complexity_series(summaries: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Fig. 4: {task: {method: {level: score x100}}} for each compared task that some run swept. summary.json keeps
    levels only for a task run at more than one, so a run that did not sweep the task has no line in its panel."""
    series = {}
    for task in shared_tasks(summaries):
        swept = {method: summary["tasks"][task]["by_complexity"] for method, summary in summaries.items()
                 if "by_complexity" in summary["tasks"][task]}
        if swept:
            series[task] = {method: {level: 100 * by_level[level]["score"] for level in sorted(by_level, key=float)}
                            for method, by_level in swept.items()}
    return series


def cost_series(summaries: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Fig. 5: per method the Ave. Norm. score over the compared tasks (A.6.6, as in compare's table) and the mean
    tokens and seconds per sample over that run's samples of those tasks."""
    tasks = shared_tasks(summaries)
    norm = normalized_averages({method: {task: summary["tasks"][task]["score"] for task in tasks}
                                for method, summary in summaries.items()})

    def per_sample(summary: dict, key: str) -> float:
        entries = [summary["tasks"][task] for task in tasks]   # summary.json holds per-task means over n samples
        return sum(entry["n"] * entry[key] for entry in entries) / sum(entry["n"] for entry in entries)

    # Ave. Norm. is None only when every method scored 0 on every task: all methods sit at 0
    return {method: dict(score=norm[method]["all"] or 0.0, tokens=per_sample(summary, "tokens"),
                         seconds=per_sample(summary, "seconds"))
            for method, summary in summaries.items()}


def training_series(runs: dict[str, list[dict]]) -> dict[str, dict[str, tuple[list, list]]]:
    """{metric: {run: (steps, values)}} for each TRAINING_PANELS metric that some run logged."""
    series = {}
    for metric, (_, _, scale) in TRAINING_PANELS.items():
        curves = {}
        for label, rows in runs.items():
            logged = [row for row in rows if metric in row]
            if logged:
                curves[label] = ([row["step"] for row in logged], [scale * row[metric] for row in logged])
        if curves:
            series[metric] = curves
    return series


# ---------------------------------------------------------------------------------------------------------------
# Drawing

def plot_score_distribution(summaries: dict[str, dict], out: Path) -> Path:
    plt = pyplot()
    series = score_distribution_series(summaries)
    colors = method_colors(series)
    figure, axes = plt.subplots(figsize=(2 + 1.4 * len(series), 4))
    axes.boxplot([list(scores.values()) for scores in series.values()], showfliers=False)   # the points show all
    jitter = np.random.default_rng(0)
    for position, (method, scores) in enumerate(series.items(), start=1):
        axes.scatter(position + jitter.uniform(-0.15, 0.15, len(scores)), list(scores.values()), s=18, alpha=0.75,
                     color=colors[method], zorder=3)
    axes.set_xticks(range(1, len(series) + 1), list(series))
    tasks = len(next(iter(series.values())))
    axes.set(xlabel="method", ylabel="score on a task (%)", ylim=(-5, 105),
             title=f"Score per task, {tasks} tasks (one point each)")
    axes.grid(axis="y", alpha=0.3)
    return save(figure, out / "score_distribution.png")


def plot_score_vs_complexity(summaries: dict[str, dict], out: Path) -> Path | None:
    """None, drawing nothing, when no run swept complexity."""
    series = complexity_series(summaries)
    if not series:
        return None
    plt = pyplot()
    colors = method_colors(summaries)
    columns = min(3, len(series))
    rows = -(-len(series) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    for axes, (task, lines) in zip(grid.flat, series.items()):
        for method, by_level in lines.items():
            axes.plot([float(level) for level in by_level], list(by_level.values()), "o-", color=colors[method],
                      label=method)
        levels = sorted({level for by_level in lines.values() for level in by_level}, key=float)
        axes.set_xticks([float(level) for level in levels], levels)
        axes.set(title=task, xlabel="complexity level", ylabel="score (%)", ylim=(-5, 105))
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    for axes in grid.flat[len(series):]:
        axes.set_visible(False)
    figure.suptitle("Score against complexity")
    return save(figure, out / "score_vs_complexity.png")


def plot_score_vs_cost(summaries: dict[str, dict], out: Path) -> Path:
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    series = cost_series(summaries)
    colors = method_colors(series)
    # Methods often tie on score and cost alike, so a label beside each point would print over another: the
    # colours and one legend beside the panels name them instead, and hollow markers let a hidden point show.
    figure, panels = plt.subplots(1, 2, figsize=(11, 4), sharey=True, layout="constrained")
    for axes, (cost, label) in zip(panels, (("tokens", "tokens per sample (all roles, prompt + completion)"),
                                            ("seconds", "seconds per sample (wall time)"))):
        for method, point in series.items():
            axes.scatter(point[cost], point["score"], s=60, facecolors="none", edgecolors=colors[method],
                         linewidths=2, label=method, zorder=3)
        costs = [point[cost] for point in series.values()]
        if min(costs) > 0 and max(costs) > 10 * min(costs):
            axes.set_xscale("log")
            axes.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set(xlabel=label, title=f"Score against {cost}")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("Ave. Norm. (% of the best method's score)")
    figure.legend(*panels[0].get_legend_handles_labels(), loc="outside right center", fontsize="small")
    return save(figure, out / "score_vs_cost.png")


def plot_training_curves(runs: dict[str, list[dict]], out: Path) -> Path:
    plt = pyplot()
    series = training_series(runs)
    colors = method_colors(runs)
    figure, panels = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.6), squeeze=False)
    for axes, (metric, curves) in zip(panels[0], series.items()):
        title, label, _ = TRAINING_PANELS[metric]
        for run, (steps, values) in curves.items():
            axes.plot(steps, values, color=colors[run], label=run)
        axes.set(title=title, xlabel="optimizer step", ylabel=label)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return save(figure, out / "training_curves.png")


def method_colors(methods) -> dict:
    """One colour per method (or training run), the same in every panel."""
    palette = pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    return {method: palette[i % len(palette)] for i, method in enumerate(methods)}


def save(figure, path: Path) -> Path:
    if figure.get_layout_engine() is None:   # a figure with a legend outside its axes lays itself out
        figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    pyplot().close(figure)
    return path
