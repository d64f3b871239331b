"""IT-07 Dashboards & Reports: report generated, report failed. Derived schemas (docs/contracts.md)."""

from __future__ import annotations

from typing import Literal

from relay.contracts.types import Count, EventModel, Text, Timestamp, Uuid

ReportFormat = Literal["pdf", "csv", "xlsx", "json"]


class _ReportRun(EventModel):
    # POST /api/v1/it/reports/run/:report_id starts a run; GET /reports/:run_id/download serves it.
    report_run_id: Uuid
    report_id: Uuid
    report_name: Text
    report_type: Text
    format: ReportFormat
    requested_by: Uuid
    started_at: Timestamp


class ReportGenerated(_ReportRun):
    """A report run finished: PF-10 notifies the requester, PF-11 files the output."""

    event_type: Literal["it_report_generated"]
    generated_at: Timestamp
    row_count: Count | None = None
    file_size_bytes: Count | None = None
    # PF-11 (Documents) files the output; the id lets it link back once stored.
    document_id: Uuid | None = None
    download_path: Text | None = None


class ReportFailed(_ReportRun):
    """A report run failed: PF-10 notifies the requester."""

    event_type: Literal["it_report_failed"]
    failed_at: Timestamp
    error_code: Text
    error_message: Text
