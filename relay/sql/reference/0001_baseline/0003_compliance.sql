-- IT-04 License Compliance Check API, as the contracts document specifies it, hardened:
-- SECURITY DEFINER with search_path = public, pg_temp (pg_temp last: a session's temporary view
-- named like an IT table is never consulted) and every relation schema-qualified; EXECUTE only
-- for the roles an operator grants it to; and "only licenses within organization context": the
-- caller's app.organization_id must be the organisation asked about.
--
-- usage_count = active assignments (users or devices holding a seat, not revoked).
--   over_deployed   usage > license_count
--   under_utilized  usage < it.license_under_utilized_percent % of license_count (default 50 %;
--                   a session may SET it, the scheduler sets scheduler.compliance.under_utilized_percent)
--   compliant       otherwise
-- variance = usage - license_count; variance_percent = variance / license_count * 100, rounded to
-- 2 places (a licence with a count of 0 reports 100 when it has any usage, else 0).

-- Before this release the scheduler's views lived in public, where a grant on all of public's
-- tables reached them and bypassed row-level security.
DROP VIEW IF EXISTS public.it_relay_license_compliance, public.it_relay_contract_expirations,
                    public.it_relay_license_expirations, public.it_relay_patch_backlog,
                    public.it_relay_ticket_clocks;

-- Every organisation's compliance, with the owner's rights: the one body of the rule. The
-- scheduler reads it directly (it checks every organisation); tenants only through the function.
CREATE OR REPLACE VIEW it_relay.license_compliance AS
SELECT u.id AS license_id, u.software_name, u.license_count, u.used AS usage_count,
       CASE WHEN u.used > u.license_count THEN 'over_deployed'
            WHEN u.used * 100 < u.license_count * t.pct THEN 'under_utilized'
            ELSE 'compliant' END AS compliance_status,
       u.used - u.license_count AS variance,
       CASE WHEN u.license_count = 0 THEN CASE WHEN u.used > 0 THEN 100::numeric ELSE 0::numeric END
            ELSE round((u.used - u.license_count) * 100.0 / u.license_count, 2) END AS variance_percent,
       u.organization_id
  FROM (SELECT l.id, l.software_name, l.license_count, l.organization_id,
               (SELECT count(*) FROM public.it_license_assignments a
                 WHERE a.license_id = l.id AND a.revoked_at IS NULL)::integer AS used
          FROM public.it_licenses l) u
 CROSS JOIN (SELECT coalesce(nullif(current_setting('it.license_under_utilized_percent', true), '')::numeric,
                             50) AS pct) t;
REVOKE ALL ON it_relay.license_compliance FROM PUBLIC;

CREATE OR REPLACE FUNCTION public.it_check_license_compliance(
    p_organization_id UUID,
    p_license_id UUID DEFAULT NULL  -- NULL = check all
) RETURNS TABLE (
    license_id UUID,
    software_name TEXT,
    license_count INTEGER,
    usage_count INTEGER,
    compliance_status TEXT,
    variance INTEGER,
    variance_percent NUMERIC
)
LANGUAGE plpgsql STABLE
SECURITY DEFINER  -- to avoid RLS recursion
SET search_path = public, pg_temp
AS $$
DECLARE
    context uuid;
BEGIN
    BEGIN
        context := nullif(pg_catalog.current_setting('app.organization_id', true), '')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        context := NULL;
    END;
    IF context IS NULL THEN
        RAISE EXCEPTION 'it_check_license_compliance: no organization context (set app.organization_id)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_organization_id IS DISTINCT FROM context THEN
        RAISE EXCEPTION 'it_check_license_compliance: organization % is outside this session''s organization context', p_organization_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
        SELECT c.license_id, c.software_name, c.license_count, c.usage_count, c.compliance_status,
               c.variance, c.variance_percent
          FROM it_relay.license_compliance c
         WHERE c.organization_id = p_organization_id
           AND (p_license_id IS NULL OR c.license_id = p_license_id)
         ORDER BY c.software_name, c.license_id;
END;
$$;
REVOKE ALL ON FUNCTION public.it_check_license_compliance(uuid, uuid) FROM PUBLIC;
