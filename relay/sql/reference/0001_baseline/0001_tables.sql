-- The IT reference schema: the tables the IT module's events come from, plus minimal stand-ins
-- for what other cores own (organizations, sites, employees). Idempotent: `it-relay db upgrade
-- --reference-schema` runs it on every deploy. Columns follow the contract payload fields; enums
-- are CHECK constraints; every table carries organization_id (row-level security keys on it).

CREATE TABLE IF NOT EXISTS organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- An organization is its own organization_id, so the same row-level policy applies.
ALTER TABLE organizations ADD COLUMN IF NOT EXISTS organization_id uuid GENERATED ALWAYS AS (id) STORED;

CREATE TABLE IF NOT EXISTS sites (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    name             text NOT NULL
);

CREATE TABLE IF NOT EXISTS employees (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    full_name        text NOT NULL,
    email            text NOT NULL
);

-- IT-03 vendors and contracts
CREATE TABLE IF NOT EXISTS it_vendors (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    vendor_name      text NOT NULL,
    vendor_type      text NOT NULL DEFAULT 'hardware'
                     CHECK (vendor_type IN ('hardware', 'software', 'service', 'consulting', 'reseller')),
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'suspended')),
    contact_email    text,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS it_contracts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    contract_number  text NOT NULL,
    vendor_id        uuid NOT NULL REFERENCES it_vendors (id),
    contract_type    text NOT NULL CHECK (contract_type IN ('support', 'maintenance', 'subscription', 'lease', 'other')),
    start_date       date,
    expiration_date  date NOT NULL,
    contract_value   numeric(14, 2) CHECK (contract_value >= 0),
    auto_renew       boolean NOT NULL DEFAULT false,
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'expired', 'terminated')),
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- IT-01 assets
CREATE TABLE IF NOT EXISTS it_assets (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id             uuid NOT NULL REFERENCES organizations (id),
    asset_tag                   text NOT NULL,
    asset_name                  text NOT NULL,
    asset_type                  text NOT NULL CHECK (asset_type IN ('desktop', 'laptop', 'tablet', 'phone', 'server',
                                    'network_equipment', 'peripheral', 'printer', 'monitor', 'other')),
    status                      text NOT NULL DEFAULT 'available'
                                CHECK (status IN ('available', 'assigned', 'in_repair', 'retired', 'disposed')),
    manufacturer                text,
    model                       text,
    serial_number               text,
    purchase_cost               numeric(14, 2) CHECK (purchase_cost >= 0),
    purchase_date               date,
    vendor_id                   uuid REFERENCES it_vendors (id),
    po_number                   text,
    warranty_months             integer CHECK (warranty_months >= 0),
    site_id                     uuid REFERENCES sites (id),
    building                    text,
    room                        text,
    disposal_method             text CHECK (disposal_method IN ('recycled', 'sold', 'donated', 'destroyed')),
    disposal_date               date,
    disposal_value              numeric(14, 2) CHECK (disposal_value >= 0),
    data_sanitization_method    text,
    certificate_of_destruction  boolean,
    disposed_by                 uuid REFERENCES employees (id),
    -- Set once, the first time purchase_cost and purchase_date are both known: the purchase event
    -- fires exactly then and never again.
    purchase_recorded_at        timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, asset_tag)
);

CREATE TABLE IF NOT EXISTS it_asset_assignments (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id       uuid NOT NULL REFERENCES organizations (id),
    asset_id              uuid NOT NULL REFERENCES it_assets (id),
    employee_id           uuid NOT NULL REFERENCES employees (id),
    assignment_date       date NOT NULL DEFAULT current_date,
    previous_assignee_id  uuid REFERENCES employees (id),
    assigned_by           uuid NOT NULL REFERENCES employees (id),
    site_id               uuid REFERENCES sites (id),
    building              text,
    room                  text,
    returned_at           timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS it_maintenance_requests (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations (id),
    asset_id          uuid NOT NULL REFERENCES it_assets (id),
    maintenance_type  text NOT NULL CHECK (maintenance_type IN ('repair', 'preventive', 'upgrade', 'replacement')),
    description       text NOT NULL,
    priority          text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    requested_by      uuid NOT NULL REFERENCES employees (id),
    site_id           uuid REFERENCES sites (id),
    building          text,
    room              text,
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'scheduled', 'done', 'cancelled')),
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- IT-02 tickets. first_response_at, resolved_at and the pending clock are kept by a BEFORE
-- trigger (0002_triggers.sql) so the SLA views need no history table.
CREATE TABLE IF NOT EXISTS it_tickets (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    uuid NOT NULL REFERENCES organizations (id),
    ticket_number      text NOT NULL,
    category           text NOT NULL CHECK (category IN ('hardware', 'software', 'network', 'access', 'email', 'other')),
    subcategory        text,
    priority           text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    subject            text NOT NULL,
    description        text NOT NULL,
    requester_id       uuid NOT NULL REFERENCES employees (id),
    affected_asset_id  uuid REFERENCES it_assets (id),
    site_id            uuid REFERENCES sites (id),
    status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'in_progress', 'pending', 'resolved', 'closed')),
    assigned_to_id     uuid REFERENCES employees (id),
    resolution_notes   text,
    updated_by         uuid REFERENCES employees (id),
    first_response_at  timestamptz,
    resolved_at        timestamptz,
    pending_since      timestamptz,
    pending_seconds    numeric NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, ticket_number)
);

-- IT-04 licences and their use (a row per user or device holding a seat)
CREATE TABLE IF NOT EXISTS it_licenses (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations (id),
    software_name     text NOT NULL,
    software_vendor   text NOT NULL,
    license_type      text NOT NULL CHECK (license_type IN ('perpetual', 'subscription', 'concurrent', 'per_user',
                          'per_device', 'site', 'enterprise')),
    -- Sensitive. Never leaves this table: events carry "[REDACTED]" when a key exists.
    license_key       text,
    license_count     integer NOT NULL CHECK (license_count >= 0),
    cost_per_license  numeric(14, 2) NOT NULL CHECK (cost_per_license >= 0),
    total_cost        numeric(14, 2) NOT NULL CHECK (total_cost >= 0),
    purchase_date     date NOT NULL,
    expiration_date   date,
    vendor_id         uuid REFERENCES it_vendors (id),
    renewal_cost      numeric(14, 2) CHECK (renewal_cost >= 0),
    renewal_date      date,
    updated_by        uuid REFERENCES employees (id),
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS it_license_assignments (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    license_id       uuid NOT NULL REFERENCES it_licenses (id),
    employee_id      uuid REFERENCES employees (id),
    asset_id         uuid REFERENCES it_assets (id),
    assigned_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    CHECK (employee_id IS NOT NULL OR asset_id IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS it_license_assignments_active_idx ON it_license_assignments (license_id) WHERE revoked_at IS NULL;

-- IT-05 security
CREATE TABLE IF NOT EXISTS it_security_incidents (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id     uuid NOT NULL REFERENCES organizations (id),
    incident_number     text NOT NULL,
    incident_type       text NOT NULL CHECK (incident_type IN ('malware', 'phishing', 'unauthorized_access', 'data_breach',
                            'policy_violation', 'other')),
    severity            text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    description         text NOT NULL,
    affected_asset_ids  uuid[],
    affected_user_ids   uuid[],
    detected_at         timestamptz NOT NULL,
    reported_by         uuid NOT NULL REFERENCES employees (id),
    site_id             uuid REFERENCES sites (id),
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'investigating', 'contained', 'closed')),
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS it_patches (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    patch_name       text NOT NULL,
    severity         text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    target_date      date NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS it_patch_deployments (
    patch_id         uuid NOT NULL REFERENCES it_patches (id),
    asset_id         uuid NOT NULL REFERENCES it_assets (id),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'deployed', 'failed')),
    deployed_at      timestamptz,
    PRIMARY KEY (patch_id, asset_id)
);

CREATE TABLE IF NOT EXISTS it_vulnerabilities (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id        uuid NOT NULL REFERENCES organizations (id),
    cve_id                 text,
    vulnerability_name     text NOT NULL,
    severity               text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    cvss_score             numeric(3, 1) CHECK (cvss_score BETWEEN 0 AND 10),
    remediation_available  boolean NOT NULL DEFAULT false,
    patch_id               uuid REFERENCES it_patches (id),
    status                 text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'mitigated', 'resolved')),
    detected_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS it_vulnerability_assets (
    vulnerability_id  uuid NOT NULL REFERENCES it_vulnerabilities (id),
    asset_id          uuid NOT NULL REFERENCES it_assets (id),
    organization_id   uuid NOT NULL REFERENCES organizations (id),
    PRIMARY KEY (vulnerability_id, asset_id)
);

-- IT-06 procurement
CREATE TABLE IF NOT EXISTS it_purchase_requests (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    request_number   text NOT NULL,
    requester_id     uuid NOT NULL REFERENCES employees (id),
    request_type     text NOT NULL CHECK (request_type IN ('hardware', 'software', 'service', 'renewal')),
    estimated_cost   numeric(14, 2) NOT NULL CHECK (estimated_cost >= 0),
    justification    text NOT NULL,
    vendor_id        uuid REFERENCES it_vendors (id),
    site_id          uuid REFERENCES sites (id),
    approval_status  text NOT NULL DEFAULT 'draft'
                     CHECK (approval_status IN ('draft', 'submitted', 'approved', 'rejected', 'cancelled')),
    approved_by      uuid REFERENCES employees (id),
    approved_at      timestamptz,
    approval_notes   text,
    po_number        text,
    received_by      uuid REFERENCES employees (id),
    received_date    date,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS it_purchase_request_items (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   uuid NOT NULL REFERENCES organizations (id),
    request_id        uuid NOT NULL REFERENCES it_purchase_requests (id),
    item_description  text NOT NULL,
    quantity          integer NOT NULL CHECK (quantity >= 0),
    serial_numbers    text[]
);

-- IT-07 report runs
CREATE TABLE IF NOT EXISTS it_report_runs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    report_id        uuid NOT NULL,
    report_name      text NOT NULL,
    report_type      text NOT NULL,
    format           text NOT NULL CHECK (format IN ('pdf', 'csv', 'xlsx', 'json')),
    requested_by     uuid NOT NULL REFERENCES employees (id),
    status           text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    started_at       timestamptz,
    finished_at      timestamptz,
    row_count        integer,
    file_size_bytes  bigint,
    document_id      uuid,
    download_path    text,
    error_code       text,
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- IT-08 onboarding/offboarding and access accounts
CREATE TABLE IF NOT EXISTS it_onboarding_instances (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  uuid NOT NULL REFERENCES organizations (id),
    instance_type    text NOT NULL DEFAULT 'onboarding' CHECK (instance_type IN ('onboarding', 'offboarding')),
    employee_id      uuid NOT NULL REFERENCES employees (id),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'in_progress', 'completed', 'cancelled')),
    task_count       integer,
    tasks_completed  integer,
    start_date       timestamptz,
    site_id          uuid REFERENCES sites (id),
    updated_by       uuid REFERENCES employees (id),
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS it_access_accounts (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id      uuid NOT NULL REFERENCES organizations (id),
    employee_id          uuid NOT NULL REFERENCES employees (id),
    account_type         text NOT NULL CHECK (account_type IN ('directory', 'email', 'vpn', 'application',
                             'hardware_token', 'other')),
    system_name          text NOT NULL,
    username             text NOT NULL,
    status               text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'suspended', 'deactivated')),
    instance_id          uuid REFERENCES it_onboarding_instances (id),
    deactivation_reason  text CHECK (deactivation_reason IN ('offboarding', 'security', 'inactivity', 'request', 'other')),
    updated_by           uuid REFERENCES employees (id),
    created_at           timestamptz NOT NULL DEFAULT now()
);

-- IT-09 change management
CREATE TABLE IF NOT EXISTS it_change_requests (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id       uuid NOT NULL REFERENCES organizations (id),
    change_number         text NOT NULL,
    title                 text NOT NULL,
    change_type           text NOT NULL CHECK (change_type IN ('standard', 'normal', 'emergency')),
    risk_level            text NOT NULL CHECK (risk_level IN ('low', 'medium', 'high', 'critical')),
    requested_by          uuid NOT NULL REFERENCES employees (id),
    status                text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'submitted', 'approved', 'rejected',
                              'scheduled', 'implemented', 'rolled_back', 'cancelled')),
    requires_cab_review   boolean NOT NULL DEFAULT false,
    cab_meeting_date      date,
    planned_start         timestamptz,
    planned_end           timestamptz,
    submitted_at          timestamptz,
    approved_by           uuid REFERENCES employees (id),
    approved_at           timestamptz,
    approval_notes        text,
    rejected_by           uuid REFERENCES employees (id),
    rejected_at           timestamptz,
    rejection_reason      text,
    scheduled_start       timestamptz,
    scheduled_end         timestamptz,
    implementer_id        uuid REFERENCES employees (id),
    scheduled_by          uuid REFERENCES employees (id),
    implemented_by        uuid REFERENCES employees (id),
    implemented_at        timestamptz,
    outcome               text CHECK (outcome IN ('successful', 'partially_successful')),
    implementation_notes  text,
    rolled_back_by        uuid REFERENCES employees (id),
    rolled_back_at        timestamptz,
    rollback_reason       text,
    affected_asset_ids    uuid[],
    site_id               uuid REFERENCES sites (id),
    created_at            timestamptz NOT NULL DEFAULT now()
);
