-- Row-level security on every IT table: a session that sets app.organization_id sees and
-- changes only that organisation's rows. Roles that own the tables or have BYPASSRLS are not
-- subject to it (the relay reads through the views above and the SECURITY DEFINER functions).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'organizations', 'sites', 'employees', 'it_vendors', 'it_contracts', 'it_assets',
        'it_asset_assignments', 'it_maintenance_requests', 'it_tickets', 'it_licenses',
        'it_license_assignments', 'it_security_incidents', 'it_patches', 'it_patch_deployments',
        'it_vulnerabilities', 'it_vulnerability_assets', 'it_purchase_requests',
        'it_purchase_request_items', 'it_report_runs', 'it_onboarding_instances',
        'it_access_accounts', 'it_change_requests']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS it_organization_isolation ON %I', t);
        EXECUTE format(
            'CREATE POLICY it_organization_isolation ON %I
                 USING (organization_id = nullif(current_setting(''app.organization_id'', true), '''')::uuid)
                 WITH CHECK (organization_id = nullif(current_setting(''app.organization_id'', true), '''')::uuid)',
            t);
    END LOOP;
END;
$$;
