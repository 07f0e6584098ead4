"""An evaluation's report (`report.json`, `report.md`): its figures per suite and per prompt origin,
both significance tests with the paper's verdict, and the paper's reference figures beside the
run's, labelled as a different setup. Human judgements (the review server's /judge page), when
there are any, are set beside the paper's hand-measured accuracies; the CLIP proxy otherwise.

`build` makes the report from an evaluation's pairs and metric samples; `with_judgements` adds
what people judged; `render` writes the markdown. All pure: the caller writes the files.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from adapter.paper import LAYER_SWEEP, REFERENCE, SETUP, SIGNIFICANCE
from adapter.quality import PAPER_METRICS, independent_ttest, paired_ttest, verdict
from adapter.suites import Prompt

ORIGINS = ("paper", "ours")


def build(
    pairs: list[dict[str, Any]],
    per_metric: dict[str, dict[str, list[float]]],
    skipped: dict[str, str],
    suites: dict[str, list[Prompt]],
    images_per_prompt: int,
    steps: int,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of an evaluation: `pairs` as written to pairs.jsonl, `per_metric` the samples
    {metric: {"baseline": [...], "adapter": [...]}} (same order: one per pair)."""
    by: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_prompt: dict[str, list[float]] = defaultdict(list)
    for p in pairs:
        by[p["suite"]][p["origin"]].append(p["clip_choice_adapter"])
        per_prompt[p["prompt"]].append(p["clip_choice_adapter"])
    choice = {s: float(np.mean([c for o in by[s].values() for c in o])) for s in suites if by[s]}
    by_origin = {
        s: {
            o: {"pairs": len(v), "adapter": float(np.mean(v)), "baseline": 1 - float(np.mean(v))}
            for o in ORIGINS
            if (v := by[s][o])
        }
        for s in suites
    }
    tests = {}
    for name, samples in per_metric.items():
        both = {
            "paired": paired_ttest(samples["baseline"], samples["adapter"]),
            "independent": independent_ttest(samples["baseline"], samples["adapter"]),
        }
        for test in both.values():
            test["verdict"] = verdict(test["p_value"])
        tests[name] = both
    paper_prompts = [
        {
            "suite": s,
            "prompt": p.text,
            "table": p.table,
            "semantics": p.semantics,
            "paper_sd": p.paper_accuracy[0],
            "paper_adapter": p.paper_accuracy[1],
            "clip_choice_adapter": float(np.mean(per_prompt[p.text])) if per_prompt[p.text] else None,
        }
        for s, ps in suites.items()
        for p in ps
        if p.paper_accuracy is not None
    ]
    all_choices = [p["clip_choice_adapter"] for p in pairs]
    return {
        "clip_choice_adapter_vs_baseline": choice,
        "clip_choice_by_origin": by_origin,
        "clip_choice_is": "an automatic proxy for the paper's human judgement of semantic accuracy",
        "clip_score": {"adapter": float(np.mean(all_choices)), "baseline": 1 - float(np.mean(all_choices))}
        if all_choices
        else None,
        "t_tests": tests,
        "higher_is_better": {**{"clip_similarity": True}, **PAPER_METRICS},
        "metrics_skipped": skipped,
        "prompt_origins": {
            s: {o: sum(p.origin == o for p in ps) for o in ORIGINS} for s, ps in suites.items()
        },
        "paper_prompts": paper_prompts,
        "images_per_prompt": images_per_prompt,
        "sampling_steps": steps,
        "pairs": len(pairs),
        "run": run or {},
        "human": None,
    }


def with_judgements(report: dict[str, Any], human: dict[str, Any]) -> dict[str, Any]:
    """The report with what people judged: `human` = {"accuracy": {prompt: {"adapter": %,
    "baseline": %, "images": n}}, "preference": {suite: {"adapter_share": x, "judgements": n}}}."""
    return {**report, "human": human}


def ours(report: dict[str, Any]) -> dict[str, tuple[Any, Any, str]]:
    """The run's own figure for each reference metric: (baseline, adapter, what it is)."""
    out: dict[str, tuple[Any, Any, str]] = {}
    if report["clip_score"]:
        out["clip_score"] = (report["clip_score"]["baseline"], report["clip_score"]["adapter"], "CLIP choice")
    human = report.get("human") or {}
    accuracy = human.get("accuracy") or {}
    for suite in ("action", "color", "counting"):
        judged = [
            accuracy[p["prompt"]]
            for p in report["paper_prompts"]
            if p["suite"] == suite and p["prompt"] in accuracy
        ]
        if judged:
            b = float(np.mean([j["baseline"] for j in judged]))
            a = float(np.mean([j["adapter"] for j in judged]))
            out[suite] = (b, a, f"human, {sum(j['images'] for j in judged)} image(s) judged")
        elif suite in report["clip_choice_adapter_vs_baseline"]:
            c = report["clip_choice_adapter_vs_baseline"][suite]
            out[suite] = (1 - c, c, "CLIP proxy (choice share, not %): no human judgement yet")
    for metric in ("brisque", "clipiqa", "musiq"):
        t = report["t_tests"].get(metric)
        if t:
            ind = t["independent"]
            out[metric] = (ind["baseline_mean"], ind["adapter_mean"], ind["verdict"])
    shares = [v for v in (human.get("preference") or {}).values() if v.get("adapter_share") is not None]
    if shares:
        n = sum(v["judgements"] for v in shares)
        a = 100 * sum(v["adapter_share"] * v["judgements"] for v in shares) / n
        out["preference"] = (100 - a, a, f"stewards, {n} blinded pair judgement(s)")
    return out


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def render(report: dict[str, Any]) -> str:
    """The report as markdown."""
    run = report.get("run") or {}
    setup = ", ".join(f"{k} {v}" for k, v in run.items()) or "this run's settings"
    lines = [
        "# SUR-adapter evaluation",
        "",
        f"{report['images_per_prompt']} image(s) per prompt (the paper: 10), baseline and adapter from the "
        f"same seeds, {report['sampling_steps']} DDIM steps. Run: {setup}.",
        "",
        "## Beside the paper",
        "",
        f"The paper's figures are for {SETUP} (Tables 2 and 3). **This run's models, sampling steps and "
        "data differ**, so the columns are set side by side to be read, not compared as equals.",
        "",
        "| metric | paper baseline | paper SUR-adapter | source | this run: baseline | this run: adapter | what ours is |",  # noqa: E501
        "|---|---|---|---|---|---|---|",
    ]
    mine = ours(report)
    for name, pb, pa, source, key in REFERENCE:
        b, a, what = mine.get(key, (None, None, "not measured in this run"))
        lines.append(f"| {name} | {pb:g} | {pa:g} | {source} | {_fmt(b)} | {_fmt(a)} | {what} |")
    sweep = ", ".join(f"layer {k}: {v}" for k, v in LAYER_SWEEP.items())
    lines += ["", f"The paper's CLIP score by LLM layer (Table 4): {sweep}.", ""]
    lines += _test_split(report)
    lines += _paper_prompts(report)
    lines += _by_origin(report)
    lines += _tests(report)
    if report["metrics_skipped"]:
        lines += ["Skipped metrics:", ""]
        lines += [f"- {m}: {why}" for m, why in report["metrics_skipped"].items()]
        lines.append("")
    lines += ["Grid (`grid.png`): per prompt row, pairs of baseline | adapter images.", ""]
    return "\n".join(lines)


def _test_split(report: dict[str, Any]) -> list[str]:
    t = report.get("test_split")
    if not t:
        return []
    if not t.get("rows"):
        return ["## The release's test split", "", "The release has no test split (or an empty one).", ""]
    return [
        "## The release's test split",
        "",
        f"Diffusion loss (ℓ_simple) on the {t['rows']} samples of the release's frozen test split, never "
        f"trained on, with the same noise and timesteps for both ({t['draws']} draws): adapter "
        f"{t['loss_simple_adapter']:.6f}, baseline {t['loss_simple_baseline']:.6f} (lower is better).",
        "",
    ]


def _paper_prompts(report: dict[str, Any]) -> list[str]:
    accuracy = (report.get("human") or {}).get("accuracy") or {}
    lines = [
        "## The paper's Table 1/7 prompts",
        "",
        "Semantic accuracy: the share of images that show the prompt's semantics. The paper's figures "
        "were measured by hand on 130 images per prompt; ours by stewards on the /judge page (the question "
        "asked is in the last column). Without judgements, CLIP's choice of the adapter's image is shown "
        "instead: a proxy, not an accuracy.",
        "",
        "| suite | prompt | paper: SD % | paper: SUR-adapter % | this run: baseline | this run: adapter | judged by | question |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in report["paper_prompts"]:
        j = accuracy.get(p["prompt"])
        if j:
            b, a, who = f"{j['baseline']:.1f}%", f"{j['adapter']:.1f}%", f"human ({j['images']} image(s))"
        else:
            c = p["clip_choice_adapter"]
            b, a, who = _fmt(None if c is None else 1 - c), _fmt(c), "CLIP proxy"
        lines.append(
            f"| {p['suite']} | {p['prompt']} | {p['paper_sd']:.2f} | {p['paper_adapter']:.2f} | {b} | {a} "
            f"| {who} | does the image show {p['semantics']}? |"
        )
    return [*lines, ""]


def _by_origin(report: dict[str, Any]) -> list[str]:
    lines = [
        "## CLIP choice per suite and prompt origin (automatic proxy)",
        "",
        "CLIP's binary choice between the adapter's and the baseline's image for the prompt, softmax over "
        "the two, mean over the pairs; 0.5 = no preference.",
        "",
        "| suite | origin | prompts | pairs | baseline | adapter |",
        "|---|---|---|---|---|---|",
    ]
    for suite, origins in report["clip_choice_by_origin"].items():
        for origin, v in origins.items():
            n = report["prompt_origins"][suite][origin]
            lines.append(
                f"| {suite} | {origin} | {n} | {v['pairs']} | {v['baseline']:.3f} | {v['adapter']:.3f} |"
            )
    return [*lines, ""]


def _tests(report: dict[str, Any]) -> list[str]:
    lines = [
        "## Quality and similarity: both t-tests",
        "",
        f"The paper's test (Table 3) is a t-test for the means of two independent samples and reads "
        f'p > {SIGNIFICANCE:g} as "quality comparable"; the paired test over the shared seeds is ours.',
        "",
        "| metric | better | baseline mean | adapter mean | independent t | p | verdict | paired t | p | verdict | n |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, t in report["t_tests"].items():
        ind, par = t["independent"], t["paired"]
        better = "higher" if report["higher_is_better"].get(m, True) else "lower"
        lines.append(
            f"| {m} | {better} | {_fmt(ind['baseline_mean'], '.4f')} | {_fmt(ind['adapter_mean'], '.4f')} "
            f"| {_fmt(ind['t'])} | {_fmt(ind['p_value'], '.4g')} | {ind['verdict']} "
            f"| {_fmt(par['t'])} | {_fmt(par['p_value'], '.4g')} | {par['verdict']} | {ind['n']} |"
        )
    return [*lines, ""]
