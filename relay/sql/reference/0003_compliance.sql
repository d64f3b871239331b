-- IT-04 License Compliance Check API, exactly as the contracts document specifies it.
-- usage_count = active assignments (users or devices holding a seat, not revoked).
--   over_deployed   usage > license_count
--   under_utilized  usage < it.license_under_utilized_percent % of license_count (default 50 %;
--                   a session may SET it, the scheduler sets scheduler.compliance.under_utilized_percent)
--   compliant       otherwise
-- variance = usage - license_count; variance_percent = variance / license_count * 100, rounded to
-- 2 places (a licence with a count of 0 reports 100 when it has any usage, else 0).
CREATE OR REPLACE FUNCTION it_check_license_compliance(
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
LANGUAGE sql STABLE
SECURITY DEFINER  -- to avoid RLS recursion
SET search_path = public
AS $$
    WITH usage AS (
        SELECT l.id, l.software_name, l.license_count,
               (SELECT count(*) FROM it_license_assignments a
                 WHERE a.license_id = l.id AND a.revoked_at IS NULL)::integer AS used
          FROM it_licenses l
         WHERE l.organization_id = p_organization_id
           AND (p_license_id IS NULL OR l.id = p_license_id)
    ), threshold AS (
        SELECT coalesce(nullif(current_setting('it.license_under_utilized_percent', true), '')::numeric, 50) AS pct
    )
    SELECT u.id, u.software_name, u.license_count, u.used,
           CASE WHEN u.used > u.license_count THEN 'over_deployed'
                WHEN u.used * 100 < u.license_count * t.pct THEN 'under_utilized'
                ELSE 'compliant' END,
           u.used - u.license_count,
           CASE WHEN u.license_count = 0 THEN CASE WHEN u.used > 0 THEN 100::numeric ELSE 0::numeric END
                ELSE round((u.used - u.license_count) * 100.0 / u.license_count, 2) END
      FROM usage u CROSS JOIN threshold t
     ORDER BY u.software_name, u.id
$$;
