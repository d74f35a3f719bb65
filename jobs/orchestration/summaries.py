"""Readable task-log lines: what each step read, wrote and decided (``step_lines``, the end of every
task's log); what the cluster and label steps chose, and why (5-10 lines each).

The pure ``*_lines`` functions format a step's result; ``sweep_rows`` reads the sweep's child
runs back from MLflow (the step logs them there, one per k).
"""

from __future__ import annotations

from typing import Any

from jobs.config import Settings
from jobs.definitions import CHOSEN_TAG, K_RULE_TAG


def cluster_lines(result: dict[str, Any], sweep: list[dict[str, Any]], k_rule: str | None) -> list[str]:
    """The night's plan, the sweep (one line per k), the promotion decision, the version that scored."""
    lines = [f"night {result['run_date']}: {result['night_type']} ({result['plan']})"]
    for row in sorted(sweep, key=lambda r: r["k"]):
        mark = "  <- chosen" if row.get("chosen") else ""
        lines.append(f"  k={row['k']}: silhouette {row.get('silhouette', float('nan')):.3f}{mark}")
    if k_rule:
        lines.append(f"  k rule: {k_rule}")
    promotion = result.get("promotion")
    if promotion:
        verdict = "promoted" if promotion["promoted"] else "not promoted"
        lines.append(f"promotion: version {promotion['new_version']} {verdict} ({promotion['reason']})")
        idle = promotion.get("idle")
        if idle:
            lines.append(
                f"  idle customers since {idle['previous_snapshot']}: {idle['idle_customers']}; label changes "
                f"by ageing (champion) {idle['champion_changes']}, with the new version "
                f"{idle['candidate_changes']}; the two disagree on {idle['relabelled']} "
                f"({idle['relabelled_share']:.2%})"
            )
    lines.append(
        f"scored with model version {result['model_version']}, k={result['k']}, "
        f"silhouette {result['silhouette']:.3f}; MLflow run {result['mlflow_run_id']}"
    )
    return lines


def label_lines(result: dict[str, Any]) -> list[str]:
    """The cluster -> label mapping, how it was decided, and the night's stability."""
    lines = [
        f"snapshot {result['run_date']}: {result['customers']} customers, model version "
        f"{result['model_version']}, previous snapshot {result['previous_snapshot'] or 'none'}"
    ]
    lines += [f"  cluster {cluster} -> {label}" for cluster, label in result["cluster_labels"].items()]
    if result.get("label_note"):
        lines.append(f"  why: {result['label_note']}")
    if result.get("idle_change_cause"):
        changes = (result.get("stability") or {}).get("label_changes_cluster")
        counted = f"{changes:.0f} " if isinstance(changes, int | float) else ""
        lines.append(f"  idle customers' label changes {counted}by: {result['idle_change_cause']}")
    stability = {k: v for k, v in (result.get("stability") or {}).items() if isinstance(v, int | float)}
    if stability:
        lines.append("  stability: " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(stability.items())[:4]))
    lines += [f"  warning: {warning}" for warning in result.get("warnings") or []]
    return lines


def sweep_rows(settings: Settings, run_id: str) -> tuple[list[dict[str, Any]], str | None]:
    """The sweep's child runs of ``run_id`` (k, silhouette, chosen) and the k rule; empty on a score night."""
    from jobs.adapters import tracking

    client = tracking.client(settings)
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    rows = [
        {
            "k": int(c.data.params.get("k", 0)),
            "silhouette": c.data.metrics.get("silhouette", float("nan")),
            "chosen": c.data.tags.get(CHOSEN_TAG) == "true",
        }
        for c in children
    ]
    return rows, parent.data.tags.get(K_RULE_TAG)


def export_lines(manifests: list[dict[str, Any]], caught_up: int = 0) -> list[str]:
    """Which snapshots were exported where, their campaign lists, and how many were caught up."""
    if not manifests:
        return ["exports: nothing to export (every published snapshot is exported)"]
    lines = []
    for manifest in manifests:
        campaigns = ", ".join(f"{c['campaign']} {c['rows']}" for c in manifest.get("campaigns", []))
        lines.append(
            f"exported snapshot {manifest['snapshot_date']}: {manifest['customers']} customers, "
            f"{len(manifest['files'])} segment files, campaigns: {campaigns or 'none'} -> {manifest['path']}"
        )
    if caught_up:
        lines.append(f"  {caught_up} of them caught up (published while no export ran)")
    return lines


def step_lines(settings: Settings, step: str, result: dict[str, Any]) -> list[str]:
    """The last lines of every task's log: what the step read, wrote and decided, then the MLflow
    run's URL (the experiment's before the night has a run). cluster and label log their decisions
    in more detail first (``cluster_lines``, ``label_lines``)."""
    if step == "cluster":
        lines = cluster_lines(result, *sweep_rows(settings, result["mlflow_run_id"]))
    elif step == "label":
        lines = label_lines(result)
    else:
        lines = [f"{step} {result.get('run_date', '')}: {what_happened(step, result)}".rstrip()]
    versions = {k: v for k, v in result.items() if isinstance(v, int) and not isinstance(v, bool) and "_" in k}
    tables = [k for k in versions if k.split("_")[0] in ("bronze", "silver", "gold", "quarantine", "run")]
    if tables:
        lines.append("  wrote/read versions: " + ", ".join(f"{name} v{versions[name]}" for name in tables))
    run_id = result.get("mlflow_run_id") or night_run(settings, result.get("run_date"))
    lines.append(f"  MLflow: {mlflow_url(settings, run_id)}")
    return lines


def night_run(settings: Settings, run_date: str | None) -> str | None:
    """The id of the night's MLflow run (cluster creates it), or None."""
    from datetime import date

    from jobs.adapters import tracking

    if not run_date:
        return None
    runs = tracking.runs_for_date(settings, settings.dag.dag_id, date.fromisoformat(run_date))
    return runs[0].info.run_id if runs else None


def what_happened(step: str, r: dict[str, Any]) -> str:
    """One sentence per step from its result (keys a step does not return are left out)."""
    if step == "validate":
        verdict = "passed" if r.get("success") else "FAILED"
        return (
            f"{r.get('row_count')} landed rows {verdict}; {r.get('quarantined_rows', 0)} quarantined, "
            f"{len(r.get('warnings') or [])} warnings; GX result {r.get('result_file')}"
        )
    if step == "ingest":
        return (
            f"read {r.get('rows_in')} rows ({r.get('quarantined')} quarantined; not purchases: {counts(r.get('excluded'))}); "
            f"snapshot of {r.get('customers')} customers"
        )
    if step == "clv":
        origin = "fitted tonight" if r.get("fitted") else "the champion"
        return (
            f"scored {r.get('customers')} customers with {origin}, CLV model version "
            f"{r.get('clv_model_version')} ({r.get('plan')}); snapshot published for the export"
        )
    if step == "eda":
        return f"report {r.get('report')} ({len(r.get('charts') or [])} charts), also in the night's MLflow run"
    if step == "maintain":
        return f"compacted and vacuumed {len(r.get('tables') or [])} tables"
    if step == "export":
        return f"{r.get('customers')} customers exported to {r.get('path')}"
    return ", ".join(sorted(r))


def counts(value: Any) -> str:
    """``{"duplicate": 2, "cancellation": 0}`` -> ``duplicate 2``; a number as it is; ``none`` when all zero."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if v) or "none"
    return str(value)


def mlflow_url(settings: Settings, run_id: str | None) -> str:
    """The run's page in the MLflow UI, or the experiment's when there is no run."""
    from jobs.adapters import tracking
    from jobs.orchestration.links import mlflow_run_url, mlflow_ui_base

    experiment = tracking.experiment_id(settings)
    if run_id:
        return mlflow_run_url(settings, experiment, run_id)
    return tracking.runs_page(mlflow_ui_base(settings), experiment)
