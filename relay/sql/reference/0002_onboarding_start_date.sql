-- An onboarding's start_date is a date, as every *_date of the contracts document is (it was a
-- timestamptz, so it_provisioning_* events carried a timestamp where a date belongs). The time of
-- day it held is dropped; the date is the one in the database's time zone.
ALTER TABLE it_onboarding_instances ALTER COLUMN start_date TYPE date USING start_date::date;
