"""The multi-seed report in the original list's format: per seed the best dev scores, then
`mean (max)` over seeds for each metric."""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence


def summarize_seeds(per_seed: Mapping[int, Mapping[str, float]], metric_names: Sequence[str]) -> dict:
    """{"seeds": {seed: {metric: value}}, "mean": {...}, "max": {...}} over the given metrics."""
    if not per_seed:
        raise ValueError("no seed finished, so there is nothing to report")
    seeds = {int(s): {m: float(v[m]) for m in metric_names} for s, v in per_seed.items()}
    values = {m: [r[m] for r in seeds.values()] for m in metric_names}
    return {
        "metrics": list(metric_names),
        "seeds": {str(s): r for s, r in seeds.items()},
        "mean": {m: statistics.fmean(v) for m, v in values.items()},
        "max": {m: max(v) for m, v in values.items()},
    }


def format_markdown(summary: dict, title: str, decimals: int = 3) -> str:
    metrics = summary["metrics"]
    fmt = f"{{:.{decimals}f}}"
    lines = [f"# {title}", "", "| seed | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for seed, row in summary["seeds"].items():
        lines.append(f"| {seed} | " + " | ".join(fmt.format(row[m]) for m in metrics) + " |")
    lines.append("| mean (max) | " + " | ".join(
        f"{fmt.format(summary['mean'][m])} ({fmt.format(summary['max'][m])})" for m in metrics) + " |")
    by_environment: dict[str, list[str]] = {}
    for seed, environment in summary.get("environments", {}).items():
        by_environment.setdefault(describe_environment(environment), []).append(seed)
    if len(by_environment) == 1:
        lines += ["", f"Trained with {next(iter(by_environment))}."]
    elif by_environment:  # a continued run (--resume) whose seeds ran on other set-ups
        lines += ["", "The seeds were trained with different set-ups:"]
        lines += [f"- {', '.join(seeds)}: {described}" for described, seeds in by_environment.items()]
    seen = [describe_seen(name, **counts) for name, counts in summary.get("seen_in_training", {}).items()
            if counts["seen"]]
    if seen:
        lines += [""] + [f"{line}." for line in seen]
    unseen = summary.get("unseen")
    if unseen:
        without = unseen.get("seeds_without")  # kept seeds an older cnbert trained
        over = (f" over seeds {', '.join(unseen['seeds'])} ({', '.join(map(str, without))}: none recorded)"
                if without else "")
        lines += ["", f"On the {unseen['examples']} dev examples not trained on alone, mean (max){over}: " + ", ".join(
            f"{m} {fmt.format(unseen['mean'][m])} ({fmt.format(unseen['max'][m])})" for m in unseen["metrics"]) + "."]
    stopped = summary.get("stopped_seeds", {})
    if stopped:
        lines += ["", "Seeds stopped before the end of training, left out of the mean (max):"]
        lines += [f"- {seed}: {reason}" for seed, reason in stopped.items()]
    return "\n".join(lines) + "\n"


def describe_environment(environment: Mapping | None) -> str:
    """A training environment (cnbert's version, the framework's, the device and the data-parallel
    replicas) in words; None is one an older cnbert did not record."""
    if environment is None:
        return "a set-up not recorded (an older cnbert)"
    replicas = environment["replicas"]
    return (f"cnbert {environment['cnbert']}, {environment['framework']}, "
            f"{replicas} replica{'' if replicas == 1 else 's'} on {environment['device']}")


def describe_seen(split: str, seen: int, of: int) -> str:
    """`seen` (at least 1) of the `of` examples of `split` (dev, test) that are training examples, in words."""
    share = 100 * seen / of
    return (f"{seen} of the {of} {split} examples ({f'{share:.1f} %' if share >= 0.1 else 'under 0.1 %'}) "
            "are training examples word for word")
