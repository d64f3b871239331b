"""IT-08 Onboarding/Offboarding: provisioning started/completed, account provisioned/deactivated.

Derived schemas (docs/contracts.md): the document names the triggers and status transitions only.
"""

from __future__ import annotations

from typing import Literal

from relay.contracts.types import Count, EventModel, Text, Timestamp, Uuid

InstanceType = Literal["onboarding", "offboarding"]
InstanceStatus = Literal["pending", "in_progress", "completed", "cancelled"]
AccountType = Literal["directory", "email", "vpn", "application", "hardware_token", "other"]
AccountStatus = Literal["pending", "active", "suspended", "deactivated"]


class _Provisioning(EventModel):
    instance_id: Uuid
    instance_type: InstanceType
    employee_id: Uuid
    employee_name: Text
    old_status: InstanceStatus
    new_status: InstanceStatus
    task_count: Count | None = None
    start_date: Timestamp | None = None
    site_id: Uuid | None = None
    changed_by: Uuid | None = None


class ProvisioningStarted(_Provisioning):
    """An onboarding or offboarding instance moved to in_progress."""

    event_type: Literal["it_provisioning_started"]
    new_status: Literal["in_progress"]
    started_at: Timestamp


class ProvisioningCompleted(_Provisioning):
    """An onboarding or offboarding instance moved to completed."""

    event_type: Literal["it_provisioning_completed"]
    new_status: Literal["completed"]
    completed_at: Timestamp
    tasks_completed: Count | None = None


class _AccountStatus(EventModel):
    account_id: Uuid
    employee_id: Uuid
    account_type: AccountType
    system_name: Text
    username: Text
    old_status: AccountStatus
    new_status: AccountStatus
    changed_by: Uuid | None = None
    instance_id: Uuid | None = None


class AccountProvisioned(_AccountStatus):
    """An employee's access account became active."""

    event_type: Literal["it_account_provisioned"]
    new_status: Literal["active"]
    provisioned_at: Timestamp


class AccountDeactivated(_AccountStatus):
    """An employee's access account was deactivated."""

    event_type: Literal["it_account_deactivated"]
    new_status: Literal["deactivated"]
    deactivated_at: Timestamp
    reason: Literal["offboarding", "security", "inactivity", "request", "other"] | None = None
