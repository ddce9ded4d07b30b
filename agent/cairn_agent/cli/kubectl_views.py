"""What ``kubectl cairn list|describe|verify`` print, as pure functions of Checkpoint objects.

Torch-free and I/O-free: the plugin fetches objects through ``kubectl_client`` and renders
them here, so the views are tested on plain dicts.
"""

from __future__ import annotations

from typing import Any

from cairn_agent.cli import adaptive_view, formatting, policy_view, preemption_view
from cairn_agent.resource import contract
from cairn_agent.resource.retention import plan_from_status, published_resume_point
from cairn_agent.resource.spec import RetentionSpec
from cairn_agent.resource.status import LocalTier
from cairn_agent.storage.retention import RetentionPlan


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = obj.get("status") or {}
    return status


def _spec(obj: dict[str, Any], key: str) -> dict[str, Any]:
    section: dict[str, Any] = (obj.get("spec") or {}).get(key) or {}
    return section


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The condition of type ``kind`` from ``status.conditions``, if any."""
    for cond in _status(obj).get(contract.CONDITIONS) or []:
        if cond.get("type") == kind:
            found: dict[str, Any] = cond
            return found
    return None


def degraded_reason(obj: dict[str, Any]) -> str:
    """The reason of a True ``Degraded`` condition, or empty."""
    cond = condition(obj, contract.COND_DEGRADED)
    return str(cond.get("reason") or "Degraded") if cond and cond.get("status") == "True" else ""


def _age(rfc3339: Any, now: float) -> str:
    return formatting.human_age(formatting.age_of_unix(formatting.parse_rfc3339(rfc3339), now))


def list_table(objs: list[dict[str, Any]], now: float, *, all_namespaces: bool) -> str:
    """``kubectl cairn list``: one row per Checkpoint."""
    headers = ["name", "latest", "resume-from", "phase", "last-save", "degraded"]
    rows = []
    for obj in sorted(
        objs, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
    ):
        status = _status(obj)
        resume = status.get(contract.RESUME_FROM) or {}
        row = [
            obj["metadata"]["name"],
            status.get(contract.LATEST_COMMITTED),
            resume.get("iteration"),
            status.get(contract.PHASE),
            _age(status.get(contract.LAST_SAVE_TIME), now),
            degraded_reason(obj),
        ]
        rows.append([obj["metadata"].get("namespace", "")] + row if all_namespaces else row)
    if all_namespaces:
        headers.insert(0, "namespace")
    return formatting.render_table(headers, rows)


def describe(obj: dict[str, Any], now: float) -> str:
    """``kubectl cairn describe``: spec summary, saved iterations, resume point, conditions,
    restarts, the adaptive save interval and the retention plan."""
    sections = [
        _header(obj),
        _spec_summary(obj),
        _progress(obj, now),
        policy_view.section(obj),
        adaptive_view.section(obj, now),
        preemption_view.section(obj, now),
        _saved_table(obj, now),
        _corrupt_lines(obj),
        _retention_section(obj),
        _conditions_table(obj, now),
    ]
    return "\n\n".join(s for s in sections if s)


def _kv(pairs: list[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in pairs) + 2
    return "\n".join(f"{(k + ':').ljust(width)}{'<none>' if v is None else v}" for k, v in pairs)


def _header(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return _kv(
        [
            ("Name", meta["name"]),
            ("Namespace", meta.get("namespace")),
            ("Phase", _status(obj).get(contract.PHASE)),
            (
                "Generation",
                _generation_text(obj),
            ),
        ]
    )


def _generation_text(obj: dict[str, Any]) -> str:
    observed = _status(obj).get(contract.OBSERVED_GENERATION)
    seen = "not yet observed by the operator" if observed is None else f"observed {observed}"
    return f"{obj['metadata'].get('generation')} ({seen})"


def _spec_summary(obj: dict[str, Any]) -> str:
    storage = _spec(obj, "storage")
    persistent = storage.get("persistent") or {}
    local = storage.get("local")
    return "Spec:\n" + _indent(
        _kv(
            [
                (
                    "Storage",
                    (
                        f"{persistent.get('path')} on PVC {persistent.get('claimName')} "
                        f"(mounted at {persistent.get('mountPath')})"
                    ),
                ),
                ("Local tier", local.get("path") if local else "off"),
                ("Save", _save_text(_spec(obj, "save"))),
                ("Async worker", _async_text(_spec(obj, "asyncWorker"))),
                ("Replication", _replication_text(_spec(obj, "replication"))),
                ("Retention", _retention_text(RetentionSpec.from_spec(obj.get("spec") or {}))),
                ("Resume", _resume_text(_spec(obj, "resume"))),
                (
                    "Verification",
                    "deep (crc32)" if _spec(obj, "verification").get("deep") else "sizes",
                ),
                ("Deletion policy", (obj.get("spec") or {}).get("deletionPolicy", "Retain")),
            ]
        )
    )


def _save_text(save: dict[str, Any]) -> str:
    text = f"every {save['interval']} steps" if save.get("interval") else "script's own cadence"
    if save.get("nonPersistentInterval"):
        kind = save.get("nonPersistentType", "global")
        text += f"; non-persistent ({kind}) every {save['nonPersistentInterval']} steps"
    policy = adaptive_view.policy_text(save)
    return f"{policy}, starting from {text}" if policy else text


def _async_text(worker: dict[str, Any]) -> str:
    if not worker.get("enabled"):
        return "off (synchronous saves)"
    persistent = "persistent worker" if worker.get("persistent", True) else "worker per save"
    return (
        f"on, {persistent}; heartbeat timeout {worker.get('heartbeatTimeoutSeconds', 120)}s, "
        f"stall after {worker.get('saveStallSeconds', 1800)}s"
    )


def _replication_text(replication: dict[str, Any]) -> str:
    return f"factor {replication.get('factor', 1)}, jump {replication.get('jump', 1)}"


def _retention_text(retention: RetentionSpec) -> str:
    keep = "keep all" if retention.keep_last is None else f"keep last {retention.keep_last}"
    parts = [keep]
    if retention.keep_every:
        parts.append(f"every {retention.keep_every}")
    if retention.pinned:
        parts.append(f"pinned {list(retention.pinned)}")
    if retention.dry_run:
        parts.append("dry run")
    return ", ".join(parts)


def _resume_text(resume: dict[str, Any]) -> str:
    policy = resume.get("policy", "LatestVerified")
    return f"{policy} {resume['iteration']}" if policy == "Pinned" else str(policy)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else line for line in text.splitlines())


def _progress(obj: dict[str, Any], now: float) -> str:
    status = _status(obj)
    resume = status.get(contract.RESUME_FROM) or {}
    pairs: list[tuple[str, object]] = [
        ("Resume point", _resume_point(resume)),
        ("Latest committed", status.get(contract.LATEST_COMMITTED)),
        ("Latest local", _local_tier(status)),
        ("Last save", _ago(status.get(contract.LAST_SAVE_TIME), now)),
        ("Save in progress", _in_flight(status.get(contract.SAVE_IN_PROGRESS), now)),
        ("Async worker", _worker_state(status.get(contract.ASYNC_WORKER), now)),
        ("Last resume", _last_resume(status.get(contract.LAST_RESUME), now)),
        ("Restarts", _restarts(status.get(contract.RESTARTS), now)),
        ("Agent generation", status.get(contract.AGENT_GENERATION)),
    ]
    return "Status:\n" + _indent(_kv(pairs))


def _ago(rfc3339: Any, now: float) -> str | None:
    return f"{rfc3339} ({_age(rfc3339, now)} ago)" if rfc3339 else None


def _resume_point(resume: dict[str, Any]) -> str | None:
    if resume.get("iteration") is None:
        return None
    text = f"iteration {resume['iteration']} ({resume.get('source', '?')})"
    return f"{text}: {resume['reason']}" if resume.get("reason") else text


def _in_flight(save: dict[str, Any] | None, now: float) -> str:
    if not save:
        return "none"
    mode = "async" if save.get("async") else "sync"
    started = f", started {_age(save.get('startedAt'), now)} ago" if save.get("startedAt") else ""
    return f"iteration {save.get('iteration')} {save.get('phase')} ({mode}{started})"


def _worker_state(worker: dict[str, Any] | None, now: float) -> str | None:
    if not worker:
        return None
    beat = f", heartbeat {_age(worker.get('heartbeatTime'), now)} ago"
    return f"{worker.get('state')} (pid {worker.get('pid')}{beat})"


def _last_resume(last: dict[str, Any] | None, now: float) -> str | None:
    if not last:
        return None
    tier = f" ({last['tier']} tier)" if last.get("tier") else ""
    text = (
        f"iteration {last.get('iteration')} from {last.get('source')}{tier}, "
        f"{_age(last.get('time'), now)} ago, generation {last.get('generation')}"
    )
    return f"{text}; {last['reason']}" if last.get("reason") else text


def _local_tier(status: dict[str, Any]) -> str | None:
    """The node-local tier: newest restorable iteration, its copies and nodes, any problem."""
    tier = LocalTier.from_status(status.get(contract.LOCAL_TIER))
    if tier is None:
        latest = status.get(contract.LATEST_LOCAL)
        return None if latest is None else f"iteration {latest}"
    text = "none restorable" if tier.iteration < 0 else f"iteration {tier.iteration}"
    if tier.iteration >= 0:
        nodes = ", ".join(tier.nodes) + (", ..." if tier.node_count > len(tier.nodes) else "")
        text += (
            f", {tier.replicas}/{tier.replication_factor} copies of each part on "
            f"{tier.node_count} node(s) ({nodes})"
        )
    return f"{text}; {tier.problem}" if tier.problem else text


def _restarts(restarts: dict[str, Any] | None, now: float) -> str:
    if not restarts or not restarts.get("count"):
        return "0"
    return (
        f"{restarts['count']} (last {_age(restarts.get('lastRestartTime'), now)} ago, "
        f"resumed from {restarts.get('lastResumedIteration')})"
    )


def saved_iterations(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """``status.savedIterations`` sorted by iteration."""
    saved = _status(obj).get(contract.SAVED_ITERATIONS) or []
    return sorted(saved, key=lambda s: int(s.get("iteration", 0)))


def _saved_table(obj: dict[str, Any], now: float) -> str:
    saved = saved_iterations(obj)
    if not saved:
        return "Saved iterations: none reported yet"
    rows = [
        (
            s["iteration"],
            _age(s.get("committedAt"), now),
            formatting.human_bytes(s.get("bytes")),
            s.get("files"),
            _verified_text(s.get("verified")),
            (s.get("manifestDigest") or "-")[:12],
        )
        for s in saved
    ]
    headers = ("iteration", "age", "size", "files", "verified", "digest")
    return "Saved iterations:\n" + _indent(formatting.render_table(headers, rows))


def _verified_text(value: Any) -> str:
    if value is None:
        return "-"
    return "yes" if value else "NO"


def _corrupt_lines(obj: dict[str, Any]) -> str:
    corrupt = _status(obj).get(contract.CORRUPT_ITERATIONS) or []
    if not corrupt:
        return ""
    lines = [f"iteration {c.get('iteration')}: {c.get('file')}: {c.get('check')}" for c in corrupt]
    return "Corrupt iterations (reported by the agent):\n" + _indent("\n".join(lines))


def retention_preview(obj: dict[str, Any]) -> RetentionPlan:
    """The plan the operator publishes in ``status.retention``, from the same status planner.

    The resume point is the operator's published ``status.resumeFrom``.
    """
    status = _status(obj)
    view = plan_from_status(
        RetentionSpec.from_spec(obj.get("spec") or {}),
        status,
        resume_iteration=published_resume_point(status),
    )
    return view.plan


def _retention_section(obj: dict[str, Any]) -> str:
    lines = ["Retention plan (spec.retention over the saved iterations):"]
    plan = retention_preview(obj)
    if plan.decisions:
        rows = [(d.iteration, d.action, plan.explain(d.iteration)) for d in plan.decisions]
        lines.append(_indent(formatting.render_table(("iteration", "decision", "why"), rows)))
    else:
        lines.append("  nothing saved yet")
    last = _status(obj).get(contract.RETENTION)
    if last:
        lines.append(
            f"  Operator's last run: retained {last.get('retainedCount')} "
            f"({formatting.human_bytes(last.get('retainedBytes'))}), planned deletions "
            f"{last.get('plannedDeletions') or []}, last GC run {last.get('lastRun') or 'never'}"
            f"{' (dry run)' if last.get('dryRun') else ''}"
        )
    return "\n".join(lines)


def _conditions_table(obj: dict[str, Any], now: float) -> str:
    conditions = _status(obj).get(contract.CONDITIONS) or []
    if not conditions:
        return "Conditions: none"
    rows = [
        (
            c.get("type"),
            c.get("status"),
            c.get("reason"),
            _age(c.get("lastTransitionTime"), now),
            c.get("message"),
        )
        for c in conditions
    ]
    headers = ("type", "status", "reason", "age", "message")
    return "Conditions:\n" + _indent(formatting.render_table(headers, rows))


def verification_report(obj: dict[str, Any]) -> tuple[str, bool]:
    """``kubectl cairn verify``: the agent-reported verification state; ``ok`` is False when
    the agent reported any corrupt iteration."""
    saved = saved_iterations(obj)
    corrupt = _status(obj).get(contract.CORRUPT_ITERATIONS) or []
    verified = [s["iteration"] for s in saved if s.get("verified")]
    unverified = [s["iteration"] for s in saved if not s.get("verified")]
    lines = [
        (
            f"Checkpoint {obj['metadata'].get('namespace')}/{obj['metadata']['name']} "
            "(as reported by the training job's agent)"
        ),
        f"  verified:   {verified or 'none'}",
        f"  unverified: {unverified or 'none'}",
        f"  resume point: {_resume_point(_status(obj).get(contract.RESUME_FROM) or {})}",
    ]
    lines += [
        f"  CORRUPT iteration {c.get('iteration')}: {c.get('file')}: {c.get('check')}"
        for c in corrupt
    ]
    path = (_spec(obj, "storage").get("persistent") or {}).get("path")
    lines.append(
        f"To re-check the files themselves: cairn verify {path} --deep (where the PVC is mounted)"
    )
    return "\n".join(lines), not corrupt
