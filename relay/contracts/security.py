"""IT-05 Security & Compliance: incident created, critical vulnerability, patch overdue."""

from __future__ import annotations

from typing import Literal

from relay.contracts.types import (
    Count,
    Date,
    EventModel,
    Flag,
    Score,
    Severity,
    Text,
    Timestamp,
    Uuid,
    UuidList,
)


class SecurityIncidentCreated(EventModel):
    """A security incident was reported: GR logs it, PF-10 alerts by severity."""

    event_type: Literal["it_security_incident_created"]
    incident_id: Uuid
    incident_number: Text
    incident_type: Literal[
        "malware", "phishing", "unauthorized_access", "data_breach", "policy_violation", "other"
    ]
    severity: Severity
    description: Text
    affected_asset_ids: UuidList | None = None
    affected_user_ids: UuidList | None = None
    detected_at: Timestamp
    reported_by: Uuid
    site_id: Uuid | None = None


class CriticalVulnerabilityDetected(EventModel):
    """A vulnerability was detected on assets: GR tracks it, PF-10 alerts."""

    event_type: Literal["it_critical_vulnerability_detected"]
    vulnerability_id: Uuid
    cve_id: Text | None = None
    vulnerability_name: Text
    severity: Severity
    # CVSS v3 scores run from 0.0 to 10.0.
    cvss_score: Score | None = None
    affected_asset_ids: UuidList
    affected_asset_count: Count
    remediation_available: Flag
    patch_id: Uuid | None = None


class PatchDeploymentOverdue(EventModel):
    """A patch is past its target date on some assets (scheduler)."""

    event_type: Literal["it_patch_deployment_overdue"]
    patch_id: Uuid
    patch_name: Text
    severity: Severity
    target_date: Date
    days_overdue: Count
    affected_asset_ids: UuidList
    affected_asset_count: Count
