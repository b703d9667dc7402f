-- Signing keys are stored like Secret Manager payloads: the PKCS#8 DER sealed (AES-256-GCM)
-- under a data key of its own, the data key wrapped by the master key. Rows written before this
-- migration hold plaintext DER and no wrapped key; the first process started with the master
-- key seals them (in one transaction) before it signs anything.
ALTER TABLE signing_keys RENAME COLUMN private_der TO sealed_pkcs8;
ALTER TABLE signing_keys ADD COLUMN wrapped_key BYTEA;
