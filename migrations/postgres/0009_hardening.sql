-- Deliveries are claimed before they are handled (a claim runs out, so a
-- crashed consumer's deliveries come back), retried with backoff, and after a
-- permanent error or too many attempts parked as dead letters.
ALTER TABLE inbox ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN dead_at BIGINT;
-- Deliveries still to handle (the claim query), and dead letters (the CLI).
CREATE INDEX inbox_dead ON inbox (dead_at) WHERE dead_at IS NOT NULL;
