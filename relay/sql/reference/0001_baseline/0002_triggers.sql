-- The 26 trigger-based events. Every trigger publishes through it_relay.publish() inside the
-- statement's transaction, so an event exists exactly when the change that caused it commits.
-- Trigger functions are SECURITY DEFINER (fixed search_path) so that the names they look up
-- (vendor, employee) are found whatever the session's row-level scope; they only ever read rows
-- of the changed row's own organization. Nulls are stripped: an optional field is absent, never null.

CREATE OR REPLACE FUNCTION it_employee_name(p_id uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT full_name FROM employees WHERE id = p_id $$;

CREATE OR REPLACE FUNCTION it_vendor_name(p_id uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT vendor_name FROM it_vendors WHERE id = p_id $$;

-- Who made the change: the row's own column when the application sets it, else the session's
-- app.user_id. If neither is known the payload lacks the field and the relay rejects the event,
-- visibly, rather than inventing an actor.
CREATE OR REPLACE FUNCTION it_actor(p_id uuid) RETURNS uuid
LANGUAGE sql STABLE SET search_path = public, pg_temp
AS $$ SELECT coalesce(p_id, nullif(current_setting('app.user_id', true), '')::uuid) $$;

-- Deferred (at-commit) triggers run once per queued row event: true only for the first call for
-- this (fact, row) in the current transaction, so one fact gives one event.
CREATE OR REPLACE FUNCTION it_first_in_transaction(p_fact text, p_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    flag text := 'it_fired.' || p_fact || '_' || replace(p_id::text, '-', '');
BEGIN
    IF coalesce(current_setting(flag, true), '') = 'yes' THEN
        RETURN false;
    END IF;
    PERFORM set_config(flag, 'yes', true);
    RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION it_publish(p_payload jsonb) RETURNS void
LANGUAGE sql VOLATILE SET search_path = public, pg_temp
AS $$ SELECT it_relay.publish(jsonb_strip_nulls(p_payload || jsonb_build_object('timestamp', now()))) $$;

-- ─── IT-01 assets ───────────────────────────────────────────────────────────────────────────

-- BEFORE: stamps purchase_recorded_at the first time cost, date and vendor are all known (the
-- event needs all three; stamped earlier, it would fire without a vendor and never again).
CREATE OR REPLACE FUNCTION it_mark_asset_purchase() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    IF NEW.purchase_cost IS NOT NULL AND NEW.purchase_date IS NOT NULL AND NEW.vendor_id IS NOT NULL
       AND NEW.purchase_recorded_at IS NULL THEN
        NEW.purchase_recorded_at := now();
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.purchase_recorded_at IS NOT NULL THEN
        NEW.purchase_recorded_at := OLD.purchase_recorded_at;  -- once recorded, always recorded
    END IF;
    RETURN NEW;
END;
$$;
DROP TRIGGER IF EXISTS it_asset_purchase_mark_trigger ON it_assets;
CREATE TRIGGER it_asset_purchase_mark_trigger
    BEFORE INSERT OR UPDATE ON it_assets
    FOR EACH ROW EXECUTE FUNCTION it_mark_asset_purchase();

CREATE OR REPLACE FUNCTION it_notify_asset_purchased() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    -- Fires when purchase_cost, purchase_date and vendor_id are first all set (never twice).
    IF NEW.purchase_recorded_at IS NULL OR (TG_OP = 'UPDATE' AND OLD.purchase_recorded_at IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_asset_purchased',
        'asset_id', NEW.id, 'asset_tag', NEW.asset_tag, 'asset_type', NEW.asset_type,
        'asset_name', NEW.asset_name, 'purchase_cost', NEW.purchase_cost,
        'purchase_date', NEW.purchase_date, 'vendor_id', NEW.vendor_id,
        'vendor_name', it_vendor_name(NEW.vendor_id), 'po_number', NEW.po_number,
        'serial_number', NEW.serial_number, 'warranty_months', NEW.warranty_months,
        'organization_id', NEW.organization_id, 'site_id', NEW.site_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_asset_purchased_trigger ON it_assets;
CREATE TRIGGER it_asset_purchased_trigger
    AFTER INSERT OR UPDATE ON it_assets
    FOR EACH ROW EXECUTE FUNCTION it_notify_asset_purchased();

CREATE OR REPLACE FUNCTION it_notify_asset_disposed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    -- Fires when status changes to 'disposed'.
    IF NEW.status <> 'disposed' OR OLD.status = 'disposed' THEN
        RETURN NULL;
    END IF;
    -- The event needs the method (FA and GR act on it): refuse the write rather than lose the fact.
    IF NEW.disposal_method IS NULL THEN
        RAISE EXCEPTION 'it_assets: disposing of an asset needs disposal_method (recycled, sold, donated or destroyed)'
            USING ERRCODE = 'not_null_violation', COLUMN = 'disposal_method', TABLE = 'it_assets';
    END IF;
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_asset_disposed',
        'asset_id', NEW.id, 'asset_tag', NEW.asset_tag, 'asset_name', NEW.asset_name,
        'disposal_method', NEW.disposal_method,
        'disposal_date', coalesce(NEW.disposal_date, current_date),
        'disposal_value', NEW.disposal_value, 'data_sanitization_method', NEW.data_sanitization_method,
        'certificate_of_destruction', NEW.certificate_of_destruction,
        'disposed_by', it_actor(NEW.disposed_by), 'organization_id', NEW.organization_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_asset_disposed_trigger ON it_assets;
CREATE TRIGGER it_asset_disposed_trigger
    AFTER UPDATE ON it_assets
    FOR EACH ROW EXECUTE FUNCTION it_notify_asset_disposed();

CREATE OR REPLACE FUNCTION it_notify_asset_assigned() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    a it_assets;
BEGIN
    SELECT * INTO a FROM it_assets WHERE id = NEW.asset_id;
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_asset_assigned',
        'asset_id', a.id, 'asset_tag', a.asset_tag, 'asset_name', a.asset_name, 'asset_type', a.asset_type,
        'employee_id', NEW.employee_id, 'employee_name', it_employee_name(NEW.employee_id),
        'assignment_date', NEW.assignment_date, 'previous_assignee_id', NEW.previous_assignee_id,
        'location', jsonb_build_object('site_id', coalesce(NEW.site_id, a.site_id),
                                       'building', coalesce(NEW.building, a.building),
                                       'room', coalesce(NEW.room, a.room)),
        'organization_id', NEW.organization_id, 'assigned_by', NEW.assigned_by));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_asset_assigned_trigger ON it_asset_assignments;
CREATE TRIGGER it_asset_assigned_trigger
    AFTER INSERT ON it_asset_assignments
    FOR EACH ROW EXECUTE FUNCTION it_notify_asset_assigned();

CREATE OR REPLACE FUNCTION it_notify_asset_maintenance_required() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    a it_assets;
BEGIN
    SELECT * INTO a FROM it_assets WHERE id = NEW.asset_id;
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_asset_maintenance_required',
        'asset_id', a.id, 'asset_tag', a.asset_tag, 'asset_name', a.asset_name,
        'maintenance_type', NEW.maintenance_type, 'description', NEW.description, 'priority', NEW.priority,
        'requested_by', NEW.requested_by,
        'location', jsonb_build_object('site_id', coalesce(NEW.site_id, a.site_id),
                                       'building', coalesce(NEW.building, a.building),
                                       'room', coalesce(NEW.room, a.room)),
        'organization_id', NEW.organization_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_asset_maintenance_required_trigger ON it_maintenance_requests;
CREATE TRIGGER it_asset_maintenance_required_trigger
    AFTER INSERT ON it_maintenance_requests
    FOR EACH ROW EXECUTE FUNCTION it_notify_asset_maintenance_required();

-- ─── IT-02 tickets ──────────────────────────────────────────────────────────────────────────

-- BEFORE: keeps the SLA clocks. First response = the first time the ticket leaves 'open';
-- resolution = the first time it reaches 'resolved' or 'closed'; time spent in 'pending'
-- (waiting on the requester) accumulates in pending_seconds and does not count against the
-- resolution target.
CREATE OR REPLACE FUNCTION it_track_ticket_clock() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status IS DISTINCT FROM OLD.status THEN
        IF OLD.status = 'open' AND NEW.first_response_at IS NULL THEN
            NEW.first_response_at := now();
        END IF;
        IF OLD.status = 'pending' AND OLD.pending_since IS NOT NULL THEN
            NEW.pending_seconds := OLD.pending_seconds + extract(epoch FROM now() - OLD.pending_since);
            NEW.pending_since := NULL;
        END IF;
        IF NEW.status = 'pending' THEN
            NEW.pending_since := now();
        END IF;
        IF NEW.status IN ('resolved', 'closed') AND NEW.resolved_at IS NULL THEN
            NEW.resolved_at := now();
        ELSIF NEW.status IN ('open', 'in_progress', 'pending') THEN
            NEW.resolved_at := NULL;  -- reopened: the resolution clock runs again
        END IF;
    END IF;
    RETURN NEW;
END;
$$;
DROP TRIGGER IF EXISTS it_ticket_clock_trigger ON it_tickets;
CREATE TRIGGER it_ticket_clock_trigger
    BEFORE UPDATE ON it_tickets
    FOR EACH ROW EXECUTE FUNCTION it_track_ticket_clock();

CREATE OR REPLACE FUNCTION it_notify_ticket_created() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_ticket_created',
        'ticket_id', NEW.id, 'ticket_number', NEW.ticket_number, 'category', NEW.category,
        'subcategory', NEW.subcategory, 'priority', NEW.priority, 'subject', NEW.subject,
        'description', NEW.description, 'requester_id', NEW.requester_id,
        'requester_name', it_employee_name(NEW.requester_id),
        'requester_email', (SELECT email FROM employees WHERE id = NEW.requester_id),
        'affected_asset_id', NEW.affected_asset_id, 'organization_id', NEW.organization_id,
        'site_id', NEW.site_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_ticket_created_trigger ON it_tickets;
CREATE TRIGGER it_ticket_created_trigger
    AFTER INSERT ON it_tickets
    FOR EACH ROW EXECUTE FUNCTION it_notify_ticket_created();

CREATE OR REPLACE FUNCTION it_notify_ticket_status_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    -- Fires when status changes (and only then).
    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    END IF;
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_ticket_status_changed',
        'ticket_id', NEW.id, 'ticket_number', NEW.ticket_number, 'old_status', OLD.status,
        'new_status', NEW.status, 'requester_id', NEW.requester_id, 'assigned_to_id', NEW.assigned_to_id,
        'changed_by', it_actor(NEW.updated_by), 'resolution_notes', NEW.resolution_notes,
        'organization_id', NEW.organization_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_ticket_status_changed_trigger ON it_tickets;
CREATE TRIGGER it_ticket_status_changed_trigger
    AFTER UPDATE ON it_tickets
    FOR EACH ROW EXECUTE FUNCTION it_notify_ticket_status_changed();

-- ─── IT-04 licences ─────────────────────────────────────────────────────────────────────────

CREATE OR REPLACE FUNCTION it_notify_license_created() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    -- The contract's security note: the key itself never enters an event; its presence does.
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_license_created',
        'license_id', NEW.id, 'software_name', NEW.software_name, 'software_vendor', NEW.software_vendor,
        'license_type', NEW.license_type,
        'license_key', CASE WHEN NEW.license_key IS NOT NULL THEN '[REDACTED]' END,
        'license_count', NEW.license_count, 'cost_per_license', NEW.cost_per_license,
        'total_cost', NEW.total_cost, 'purchase_date', NEW.purchase_date,
        'expiration_date', NEW.expiration_date, 'vendor_id', NEW.vendor_id,
        'organization_id', NEW.organization_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_license_created_trigger ON it_licenses;
CREATE TRIGGER it_license_created_trigger
    AFTER INSERT ON it_licenses
    FOR EACH ROW EXECUTE FUNCTION it_notify_license_created();

CREATE OR REPLACE FUNCTION it_notify_license_renewed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    -- Fires when the expiry date is extended (new > old); a date moved earlier is a correction.
    IF OLD.expiration_date IS NULL OR NEW.expiration_date IS NULL OR NEW.expiration_date <= OLD.expiration_date THEN
        RETURN NULL;
    END IF;
    -- Finance books renewal_cost as the renewal expense: the purchase total is not a stand-in.
    IF NEW.renewal_cost IS NULL THEN
        RAISE EXCEPTION 'it_licenses: extending expiration_date needs renewal_cost (it_license_renewed tells Finance the renewal expense)'
            USING ERRCODE = 'not_null_violation', COLUMN = 'renewal_cost', TABLE = 'it_licenses';
    END IF;
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_license_renewed',
        'license_id', NEW.id, 'software_name', NEW.software_name, 'software_vendor', NEW.software_vendor,
        'old_expiration_date', OLD.expiration_date, 'new_expiration_date', NEW.expiration_date,
        'renewal_date', coalesce(NEW.renewal_date, current_date),
        'renewal_cost', NEW.renewal_cost,
        'renewed_by', it_actor(NEW.updated_by), 'organization_id', NEW.organization_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_license_renewed_trigger ON it_licenses;
CREATE TRIGGER it_license_renewed_trigger
    AFTER UPDATE ON it_licenses
    FOR EACH ROW EXECUTE FUNCTION it_notify_license_renewed();

-- ─── IT-05 security ─────────────────────────────────────────────────────────────────────────

CREATE OR REPLACE FUNCTION it_notify_security_incident_created() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_security_incident_created',
        'incident_id', NEW.id, 'incident_number', NEW.incident_number, 'incident_type', NEW.incident_type,
        'severity', NEW.severity, 'description', NEW.description,
        'affected_asset_ids', to_jsonb(NEW.affected_asset_ids), 'affected_user_ids', to_jsonb(NEW.affected_user_ids),
        'detected_at', NEW.detected_at, 'reported_by', NEW.reported_by,
        'organization_id', NEW.organization_id, 'site_id', NEW.site_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_security_incident_created_trigger ON it_security_incidents;
CREATE TRIGGER it_security_incident_created_trigger
    AFTER INSERT ON it_security_incidents
    FOR EACH ROW EXECUTE FUNCTION it_notify_security_incident_created();

-- Deferred to commit: the affected assets are rows of it_vulnerability_assets, usually inserted
-- after the vulnerability in the same transaction.
CREATE OR REPLACE FUNCTION it_notify_critical_vulnerability_detected() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    v it_vulnerabilities;
    assets uuid[];
BEGIN
    -- Fires when a vulnerability is recorded as critical, or escalated to critical.
    SELECT * INTO v FROM it_vulnerabilities WHERE id = NEW.id;
    IF v.severity <> 'critical' OR (TG_OP = 'UPDATE' AND OLD.severity = 'critical') THEN
        RETURN NULL;
    END IF;
    -- At commit, an INSERT and an UPDATE of the same row in one transaction are two queued
    -- trigger events seeing the same final row: one fact, one event.
    IF NOT it_first_in_transaction('critical_vulnerability', v.id) THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(array_agg(asset_id ORDER BY asset_id), '{}') INTO assets
      FROM it_vulnerability_assets WHERE vulnerability_id = v.id;
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_critical_vulnerability_detected',
        'vulnerability_id', v.id, 'cve_id', v.cve_id, 'vulnerability_name', v.vulnerability_name,
        'severity', v.severity, 'cvss_score', v.cvss_score, 'affected_asset_ids', to_jsonb(assets),
        'affected_asset_count', cardinality(assets), 'remediation_available', v.remediation_available,
        'patch_id', v.patch_id, 'organization_id', v.organization_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_critical_vulnerability_detected_trigger ON it_vulnerabilities;
CREATE CONSTRAINT TRIGGER it_critical_vulnerability_detected_trigger
    AFTER INSERT OR UPDATE OF severity ON it_vulnerabilities
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION it_notify_critical_vulnerability_detected();

-- ─── IT-06 procurement ──────────────────────────────────────────────────────────────────────

CREATE OR REPLACE FUNCTION it_notify_purchase_request() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    old_status text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.approval_status END;
BEGIN
    IF NEW.approval_status = 'submitted' AND old_status IS DISTINCT FROM 'submitted' THEN
        PERFORM it_publish(jsonb_build_object(
            'event_type', 'it_purchase_request_submitted',
            'request_id', NEW.id, 'request_number', NEW.request_number, 'requester_id', NEW.requester_id,
            'requester_name', it_employee_name(NEW.requester_id), 'request_type', NEW.request_type,
            'estimated_cost', NEW.estimated_cost, 'justification', NEW.justification,
            'vendor_id', NEW.vendor_id, 'vendor_name', it_vendor_name(NEW.vendor_id),
            'organization_id', NEW.organization_id, 'site_id', NEW.site_id));
    ELSIF NEW.approval_status = 'approved' AND old_status IS DISTINCT FROM 'approved' THEN
        PERFORM it_publish(jsonb_build_object(
            'event_type', 'it_purchase_request_approved',
            'request_id', NEW.id, 'request_number', NEW.request_number, 'requester_id', NEW.requester_id,
            'request_type', NEW.request_type, 'estimated_cost', NEW.estimated_cost,
            'vendor_id', NEW.vendor_id, 'vendor_name', it_vendor_name(NEW.vendor_id),
            'approved_by', it_actor(NEW.approved_by), 'approved_at', coalesce(NEW.approved_at, now()),
            'approval_notes', NEW.approval_notes, 'organization_id', NEW.organization_id));
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_purchase_request_trigger ON it_purchase_requests;
CREATE TRIGGER it_purchase_request_trigger
    AFTER INSERT OR UPDATE OF approval_status ON it_purchase_requests
    FOR EACH ROW EXECUTE FUNCTION it_notify_purchase_request();

-- Deferred to commit: the received items are rows of it_purchase_request_items.
CREATE OR REPLACE FUNCTION it_notify_purchase_request_received() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    r it_purchase_requests;
BEGIN
    -- Fires when the request is received: received_date is first set.
    SELECT * INTO r FROM it_purchase_requests WHERE id = NEW.id;
    IF r.received_date IS NULL OR (TG_OP = 'UPDATE' AND OLD.received_date IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    IF NOT it_first_in_transaction('purchase_request_received', r.id) THEN
        RETURN NULL;
    END IF;
    PERFORM it_publish(jsonb_build_object(
        'event_type', 'it_purchase_request_received',
        'request_id', r.id, 'request_number', r.request_number, 'po_number', r.po_number,
        'items_received', (SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                               'item_description', i.item_description, 'quantity', i.quantity,
                               'serial_numbers', to_jsonb(i.serial_numbers))) ORDER BY i.item_description), '[]')
                             FROM it_purchase_request_items i WHERE i.request_id = r.id),
        'received_by', it_actor(r.received_by), 'received_date', r.received_date, 'vendor_id', r.vendor_id,
        'organization_id', r.organization_id));
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_purchase_request_received_trigger ON it_purchase_requests;
CREATE CONSTRAINT TRIGGER it_purchase_request_received_trigger
    AFTER INSERT OR UPDATE OF received_date ON it_purchase_requests
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION it_notify_purchase_request_received();

-- ─── IT-07 reports ──────────────────────────────────────────────────────────────────────────

CREATE OR REPLACE FUNCTION it_notify_report_run() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    base jsonb;
BEGIN
    IF NEW.status NOT IN ('completed', 'failed') OR NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    END IF;
    base := jsonb_build_object(
        'report_run_id', NEW.id, 'report_id', NEW.report_id, 'report_name', NEW.report_name,
        'report_type', NEW.report_type, 'format', NEW.format, 'requested_by', NEW.requested_by,
        'started_at', coalesce(NEW.started_at, NEW.created_at), 'organization_id', NEW.organization_id);
    IF NEW.status = 'completed' THEN
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_report_generated', 'generated_at', coalesce(NEW.finished_at, now()),
            'row_count', NEW.row_count, 'file_size_bytes', NEW.file_size_bytes,
            'document_id', NEW.document_id, 'download_path', NEW.download_path));
    ELSE
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_report_failed', 'failed_at', coalesce(NEW.finished_at, now()),
            'error_code', coalesce(NEW.error_code, 'unknown'),
            'error_message', coalesce(NEW.error_message, 'no message recorded')));
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_report_run_status_trigger ON it_report_runs;
CREATE TRIGGER it_report_run_status_trigger
    AFTER UPDATE OF status ON it_report_runs
    FOR EACH ROW EXECUTE FUNCTION it_notify_report_run();

-- ─── IT-08 onboarding and accounts ──────────────────────────────────────────────────────────

CREATE OR REPLACE FUNCTION it_notify_provisioning_status() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    base jsonb;
BEGIN
    -- Fires when status changes to 'in_progress' (started) or 'completed' (completed).
    IF NEW.status IS NOT DISTINCT FROM OLD.status OR NEW.status NOT IN ('in_progress', 'completed') THEN
        RETURN NULL;
    END IF;
    base := jsonb_build_object(
        'instance_id', NEW.id, 'instance_type', NEW.instance_type, 'employee_id', NEW.employee_id,
        'employee_name', it_employee_name(NEW.employee_id), 'old_status', OLD.status,
        'new_status', NEW.status, 'task_count', NEW.task_count, 'start_date', NEW.start_date,
        'site_id', NEW.site_id, 'changed_by', it_actor(NEW.updated_by),
        'organization_id', NEW.organization_id);
    IF NEW.status = 'in_progress' THEN
        PERFORM it_publish(base || jsonb_build_object('event_type', 'it_provisioning_started', 'started_at', now()));
    ELSE
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_provisioning_completed', 'completed_at', now(),
            'tasks_completed', NEW.tasks_completed));
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_provisioning_status_trigger ON it_onboarding_instances;
CREATE TRIGGER it_provisioning_status_trigger
    AFTER UPDATE ON it_onboarding_instances
    FOR EACH ROW EXECUTE FUNCTION it_notify_provisioning_status();

CREATE OR REPLACE FUNCTION it_notify_account_status() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    base jsonb;
BEGIN
    -- Fires when status changes to 'active' (provisioned) or 'deactivated' (deactivated).
    IF NEW.status IS NOT DISTINCT FROM OLD.status OR NEW.status NOT IN ('active', 'deactivated') THEN
        RETURN NULL;
    END IF;
    base := jsonb_build_object(
        'account_id', NEW.id, 'employee_id', NEW.employee_id, 'account_type', NEW.account_type,
        'system_name', NEW.system_name, 'username', NEW.username, 'old_status', OLD.status,
        'new_status', NEW.status, 'changed_by', it_actor(NEW.updated_by), 'instance_id', NEW.instance_id,
        'organization_id', NEW.organization_id);
    IF NEW.status = 'active' THEN
        PERFORM it_publish(base || jsonb_build_object('event_type', 'it_account_provisioned', 'provisioned_at', now()));
    ELSE
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_account_deactivated', 'deactivated_at', now(), 'reason', NEW.deactivation_reason));
    END IF;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_account_status_trigger ON it_access_accounts;
CREATE TRIGGER it_account_status_trigger
    AFTER UPDATE ON it_access_accounts
    FOR EACH ROW EXECUTE FUNCTION it_notify_account_status();

-- ─── IT-09 changes ──────────────────────────────────────────────────────────────────────────

CREATE OR REPLACE FUNCTION it_notify_change_status() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    base jsonb;
    old_status text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
BEGIN
    IF NEW.status IS NOT DISTINCT FROM old_status OR NEW.status IN ('draft', 'cancelled') THEN
        RETURN NULL;
    END IF;
    base := jsonb_build_object(
        'change_id', NEW.id, 'change_number', NEW.change_number, 'title', NEW.title,
        'change_type', NEW.change_type, 'risk_level', NEW.risk_level, 'requested_by', NEW.requested_by,
        'old_status', old_status, 'affected_asset_ids', to_jsonb(NEW.affected_asset_ids),
        'site_id', NEW.site_id, 'organization_id', NEW.organization_id);
    CASE NEW.status
    WHEN 'submitted' THEN
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_change_submitted', 'submitted_at', coalesce(NEW.submitted_at, now()),
            'requires_cab_review', NEW.requires_cab_review, 'planned_start', NEW.planned_start,
            'planned_end', NEW.planned_end));
        IF NEW.requires_cab_review THEN
            PERFORM it_publish(base || jsonb_build_object(
                'event_type', 'it_cab_review_required', 'submitted_at', coalesce(NEW.submitted_at, now()),
                'cab_meeting_date', NEW.cab_meeting_date));
        END IF;
    WHEN 'approved' THEN
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_change_approved', 'approved_by', it_actor(NEW.approved_by),
            'approved_at', coalesce(NEW.approved_at, now()), 'approval_notes', NEW.approval_notes));
    WHEN 'rejected' THEN
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_change_rejected', 'rejected_by', it_actor(NEW.rejected_by),
            'rejected_at', coalesce(NEW.rejected_at, now()), 'rejection_reason', NEW.rejection_reason));
    WHEN 'scheduled' THEN
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_change_scheduled', 'scheduled_start', NEW.scheduled_start,
            'scheduled_end', NEW.scheduled_end, 'implementer_id', NEW.implementer_id,
            'scheduled_by', it_actor(NEW.scheduled_by)));
    WHEN 'implemented' THEN
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_change_implemented', 'implemented_by', it_actor(NEW.implemented_by),
            'implemented_at', coalesce(NEW.implemented_at, now()), 'outcome', NEW.outcome,
            'implementation_notes', NEW.implementation_notes));
    WHEN 'rolled_back' THEN
        PERFORM it_publish(base || jsonb_build_object(
            'event_type', 'it_change_rolled_back', 'rolled_back_by', it_actor(NEW.rolled_back_by),
            'rolled_back_at', coalesce(NEW.rolled_back_at, now()), 'rollback_reason', NEW.rollback_reason));
    END CASE;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS it_change_status_trigger ON it_change_requests;
CREATE TRIGGER it_change_status_trigger
    AFTER INSERT OR UPDATE OF status ON it_change_requests
    FOR EACH ROW EXECUTE FUNCTION it_notify_change_status();
