-- PAdES signatures in the same two steps as CAdES. A PDF signature cannot be finished
-- from a digest alone: prepare stores the PDF with its signature placeholder
-- (prepared_document), finalize stores the signed PDF (signed_document) and drops the
-- prepared copy, which the signed one contains byte for byte. format tells the two
-- kinds apart; rows from before are CAdES.
ALTER TABLE pending_signature ADD COLUMN format TEXT NOT NULL DEFAULT 'cades';
ALTER TABLE pending_signature ADD COLUMN prepared_document BYTEA;
ALTER TABLE pending_signature ADD COLUMN signed_document BYTEA;
