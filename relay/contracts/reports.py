"""IT-07 Dashboards & Reports: report generated, report failed. Derived schemas (docs/contracts.md):
only what identifies the fact is required; every other field is checked when present, and the
format is open (any string; the known values are documented)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from relay.contracts.types import Count, EventModel, Text, Timestamp, Uuid

ReportFormat = Annotated[Text, Field(description="Known values: pdf, csv, xlsx, json (open).")]


class _ReportRun(EventModel):
    # POST /api/v1/it/reports/run/:report_id starts a run; GET /reports/:run_id/download serves it.
    report_run_id: Uuid
    report_id: Uuid | None = None
    report_name: Text | None = None
    report_type: Text | None = None
    format: ReportFormat | None = None
    requested_by: Uuid | None = None
    started_at: Timestamp | None = None


class ReportGenerated(_ReportRun):
    """A report run produced its output."""

    event_type: Literal["it_report_generated"]
    generated_at: Timestamp | None = None
    row_count: Count | None = None
    file_size_bytes: Count | None = None
    # PF-11 (Documents) files the output; the id lets it link back once stored.
    document_id: Uuid | None = None
    download_path: Text | None = None


class ReportFailed(_ReportRun):
    """A report run failed."""

    event_type: Literal["it_report_failed"]
    failed_at: Timestamp | None = None
    error_code: Text | None = None
    error_message: Text | None = None
