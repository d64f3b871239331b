-- A key name with a long run of separators (license____________________key, licence_-_. _-_key,
-- license_key________) assigns a licence key as surely as license_key does: is_licence_key()
-- already drops any run of separators, so the assignment rule allows any run too (it allowed 3
-- between letters, 8 between the words, 32 characters of any kind after "key"; now 32 letters and
-- digits after it, with any runs of separators around them). relay/redaction.py's _ASSIGNMENT
-- says the same; a shared corpus test holds them together. Linear: a separator is never a letter
-- or a digit, so each run is matched one way.
-- CREATE OR REPLACE keeps the function's owner and its EXECUTE privileges as 0004 left them.
CREATE OR REPLACE FUNCTION it_relay.assigns_licence_key(s text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT it_relay.fold(s) ~ (
        'l[^0-9a-z]*i[^0-9a-z]*c[^0-9a-z]*e[^0-9a-z]*n[^0-9a-z]*[cs][^0-9a-z]*e'
        || '[^0-9a-z]*k[^0-9a-z]*e[^0-9a-z]*y'
        || '(?:[^0-9a-z"'':=' || chr(10) || ']*[0-9a-z]){0,32}[^0-9a-z"'':=' || chr(10) || ']*'
        || '["''\\[:space:]]{0,4}[:=]')
$$;
