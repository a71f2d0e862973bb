-- The pull request a revision run continues (its number), when known.
ALTER TABLE runs ADD COLUMN pull_request BIGINT;
