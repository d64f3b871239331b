"""IT-08 Onboarding/Offboarding: provisioning started/completed, account provisioned/deactivated.

Derived schemas (docs/contracts.md): the document names the triggers and status transitions only,
so only what identifies the fact is required; every other field is checked when present, and the
status and kind fields are open (any string; the known values are documented).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from relay.contracts.types import Count, Date, EventModel, Text, Timestamp, Uuid

InstanceType = Annotated[Text, Field(description="Known values: onboarding, offboarding (open).")]
InstanceStatus = Annotated[
    Text, Field(description="Known values: pending, in_progress, completed, cancelled (open).")
]
AccountType = Annotated[
    Text,
    Field(description="Known values: directory, email, vpn, application, hardware_token, other (open)."),
]
AccountStatus = Annotated[
    Text, Field(description="Known values: pending, active, suspended, deactivated (open).")
]


class _Provisioning(EventModel):
    instance_id: Uuid
    instance_type: InstanceType | None = None
    employee_id: Uuid | None = None
    employee_name: Text | None = None
    old_status: InstanceStatus | None = None
    new_status: InstanceStatus | None = None
    task_count: Count | None = None
    start_date: Date | None = None
    site_id: Uuid | None = None
    changed_by: Uuid | None = None


class ProvisioningStarted(_Provisioning):
    """An onboarding or offboarding instance moved to in_progress."""

    event_type: Literal["it_provisioning_started"]
    started_at: Timestamp | None = None


class ProvisioningCompleted(_Provisioning):
    """An onboarding or offboarding instance moved to completed."""

    event_type: Literal["it_provisioning_completed"]
    completed_at: Timestamp | None = None
    tasks_completed: Count | None = None


class _AccountStatus(EventModel):
    account_id: Uuid
    employee_id: Uuid | None = None
    account_type: AccountType | None = None
    system_name: Text | None = None
    username: Text | None = None
    old_status: AccountStatus | None = None
    new_status: AccountStatus | None = None
    changed_by: Uuid | None = None
    instance_id: Uuid | None = None


class AccountProvisioned(_AccountStatus):
    """An employee's access account became active."""

    event_type: Literal["it_account_provisioned"]
    provisioned_at: Timestamp | None = None


class AccountDeactivated(_AccountStatus):
    """An employee's access account was deactivated."""

    event_type: Literal["it_account_deactivated"]
    deactivated_at: Timestamp | None = None
    reason: (
        Annotated[
            Text, Field(description="Known values: offboarding, security, inactivity, request, other (open).")
        ]
        | None
    ) = None
