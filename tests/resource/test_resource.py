"""The torch-free Checkpoint contract: spec defaults held to the CRD, typed status entries."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from cairn_agent.resource import status as entries
from cairn_agent.resource.spec import DEFAULT_KEEP_LAST, RetentionSpec
from cairn_agent.resource.times import format_time, parse_time

CRD = Path(__file__).resolve().parents[2] / "crds" / "checkpoints.cairn.dev.yaml"


def _schema(*path: str) -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    node: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for key in path:
        node = node["properties"][key]
    return node


def test_the_crd_defaults_keep_last_to_the_spec_views_constant() -> None:
    assert _schema("spec", "retention", "keepLast")["default"] == DEFAULT_KEEP_LAST
    assert RetentionSpec.from_spec({}).keep_last == DEFAULT_KEEP_LAST
    assert RetentionSpec.from_spec({"retention": {}}) == RetentionSpec()


def test_the_crd_lists_exactly_the_save_phases_the_agent_may_report() -> None:
    phase = _schema("status", "saveInProgress", "phase")
    assert tuple(phase["enum"]) == entries.SAVE_PHASES


def test_retention_spec_reads_mistyped_fields_as_unset() -> None:
    spec = {"retention": {"keepLast": "2", "keepEvery": True, "pinned": [300, "x", 100, 300]}}
    assert RetentionSpec.from_spec(spec) == RetentionSpec(keep_last=None, pinned=(100, 300))


@pytest.mark.parametrize(
    "entry",
    [
        entries.SaveInProgress(
            iteration=7, phase="Finalizing", started_at="2026-01-01T00:00:00Z", is_async=True
        ),
        entries.AsyncWorker(state="Stopped", heartbeat_time="2026-01-01T00:00:00Z", pid=3),
        entries.LastResume(
            iteration=5, source="persistent", time="2026-01-01T00:00:00Z", generation=2
        ),
        entries.SavedIteration(
            iteration=9,
            committed_at="2026-01-01T00:00:00Z",
            bytes=10,
            files=2,
            manifest_digest="abc",
            verified=True,
        ),
        entries.CorruptIteration(iteration=4, file="f", check="crc", time="2026-01-01T00:00:00Z"),
    ],
)
def test_every_status_entry_reads_back_what_it_writes(entry: Any) -> None:
    assert type(entry).from_status(entry.to_status()) == entry


def test_readers_tolerate_what_an_older_or_broken_agent_wrote() -> None:
    assert entries.SaveInProgress.from_status({"iteration": 1, "phase": "Uploading"}) == (
        entries.SaveInProgress(iteration=1, phase=None, started_at="", is_async=False)
    )
    worker = entries.AsyncWorker.from_status({"state": "Finished", "heartbeatTime": "x"})
    assert worker is not None and worker.state is None and not worker.quiet
    assert entries.AsyncWorker.from_status({"state": "Stopped"}).quiet  # type: ignore[union-attr]
    assert entries.SavedIteration.from_status({"iteration": -1}) is None
    assert entries.LastResume.from_status("garbage") is None
    status = {
        "savedIterations": [{"iteration": 1, "verified": True}, {"iteration": "2"}, None],
        "latestCommittedIteration": 3,
        "corruptIterations": [{"iteration": 1, "file": "a", "check": "size"}],
    }
    saved = entries.saved_iterations(status)
    assert [s.iteration for s in saved] == [1, 3]
    assert entries.corrupt_iterations(status) == {1: "a: size"}
    assert entries.newest_verified(saved, entries.corrupt_iterations(status)) is None


def test_one_rfc3339_form_both_ways() -> None:
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    assert format_time(moment) == "2026-01-02T03:04:05Z"
    assert format_time(moment, fractional=True) == "2026-01-02T03:04:05.678901Z"
    assert parse_time(format_time(moment, fractional=True)) == moment
    assert format_time(moment.timestamp(), fractional=True) == "2026-01-02T03:04:05.678901Z"
    assert parse_time("2026-01-02T03:04:05") == moment.replace(microsecond=0)
    assert parse_time("yesterday") is None and parse_time(None) is None
