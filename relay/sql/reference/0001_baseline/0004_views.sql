-- What the scheduler reads, and nothing else: a deployment whose IT tables differ from this
-- reference schema redefines these views (same names and columns), not Python code. They live in
-- the it_relay schema, out of reach of any grant on public, and run with their owner's rights
-- (not security_invoker), so the relay's role needs SELECT on them only, never on the IT tables,
-- and a tenant's role has no grant on them at all. "days remaining" and "hours elapsed" here use
-- the database's clock; the scheduler computes its own from the dates, in scheduler.timezone, so
-- --now can replay time. it_relay.license_compliance is defined with the compliance function.

CREATE OR REPLACE VIEW it_relay.contract_expirations AS
SELECT c.id AS contract_id, c.contract_number, c.vendor_id, v.vendor_name, c.contract_type,
       c.expiration_date, (c.expiration_date - current_date) AS days_remaining,
       c.contract_value, c.auto_renew, c.organization_id
  FROM public.it_contracts c
  JOIN public.it_vendors v ON v.id = c.vendor_id
 WHERE c.status = 'active';

CREATE OR REPLACE VIEW it_relay.license_expirations AS
SELECT l.id AS license_id, l.software_name, l.software_vendor, l.license_type, l.expiration_date,
       (l.expiration_date - current_date) AS days_remaining, l.license_count, l.renewal_cost,
       l.organization_id
  FROM public.it_licenses l
 WHERE l.expiration_date IS NOT NULL;

-- Patches with assets still waiting for them (not deployed), whatever the target date; the
-- scheduler decides which are overdue by its own clock.
CREATE OR REPLACE VIEW it_relay.patch_backlog AS
SELECT p.id AS patch_id, p.patch_name, p.severity, p.target_date,
       array_agg(d.asset_id ORDER BY d.asset_id) AS affected_asset_ids,
       count(*)::integer AS affected_asset_count, p.organization_id
  FROM public.it_patches p
  JOIN public.it_patch_deployments d ON d.patch_id = p.id AND d.status <> 'deployed'
 GROUP BY p.id;

-- Every ticket's SLA clocks. Which still matter is decided by the scheduler's query against the
-- pass's own time ($now), never the database's clock here, so --now can replay any time.
CREATE OR REPLACE VIEW it_relay.ticket_clocks AS
SELECT t.id AS ticket_id, t.ticket_number, t.priority, t.status, t.assigned_to_id, t.organization_id,
       t.created_at, t.first_response_at, t.resolved_at, t.pending_since, t.pending_seconds
  FROM public.it_tickets t;

REVOKE ALL ON it_relay.contract_expirations, it_relay.license_expirations, it_relay.patch_backlog,
              it_relay.ticket_clocks FROM PUBLIC;
