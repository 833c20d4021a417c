-- Siegel store, version 3: where a key came from, in more detail than
-- source_kind (an OpenPGP key harvested from an Autocrypt header or an
-- attached key, found by WKD, a key change that was seen but not yet
-- confirmed). Free text of our own tokens; NULL for older rows.
-- Keep in step with the other engine's 0003_key_sources.sql.
ALTER TABLE pgp_keys ADD COLUMN source_detail TEXT;
ALTER TABLE certificates ADD COLUMN source_detail TEXT;

-- Every GINA account starts with preferred_method 'gina'; only a method
-- the recipient set in the portal is a choice that outranks the keys we
-- know of them (the hierarchy's first rule).
ALTER TABLE gina_accounts ADD COLUMN method_chosen BOOLEAN NOT NULL DEFAULT FALSE;
