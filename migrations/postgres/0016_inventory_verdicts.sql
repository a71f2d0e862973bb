-- The full resync's verdicts, kept across restarts: the live object named
-- `reference` with this field fingerprint (its digest annotation and who owns
-- which fields, hashed) was found to own every field its state-repo file
-- sets. The watches' first lists after a start match objects against these
-- instead of reading every file again; an object whose fingerprint changed
-- is read as before.
CREATE TABLE inventory_verdicts (
    instance    TEXT   NOT NULL,
    reference   TEXT   NOT NULL,
    fingerprint BIGINT NOT NULL,
    PRIMARY KEY (instance, reference)
);
