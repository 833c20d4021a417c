-- Siegel store, version 4: what a correspondent announced they can
-- decrypt (S/MIME SMIMECapabilities of their last verified signature), as
-- our own comma-separated tokens ("aes256-gcm"); NULL: nothing announced.
-- Keep in step with the other engine's 0004_capabilities.sql.
ALTER TABLE certificates ADD COLUMN capabilities TEXT;
ALTER TABLE pgp_keys ADD COLUMN capabilities TEXT;
