-- The service role of issueops on PostgreSQL: what `issueops gateway` and
-- `issueops reconciler` connect as. Migrations run as the schema's owner
-- (`issueops migrate` with the owner's URL); the service role may read and
-- write the working tables, but may only INSERT into and SELECT from the
-- audit table. Only a table's owner may drop, disable or replace its
-- triggers, so the service role cannot lift the append-only guard either.
--
-- Run as the owner, in the issueops database, after `issueops migrate`:
--   psql "$OWNER_URL" -v ON_ERROR_STOP=1 -v service=issueops_service -f service-role.sql
-- The role itself (LOGIN, a password, not the owner, no superuser) is
-- created by whoever administers the server:
--   CREATE ROLE issueops_service LOGIN PASSWORD '...';

GRANT USAGE ON SCHEMA public TO :"service";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"service";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"service";
-- Append-only: rows are added and read, never changed or removed.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM :"service";
-- The schema's history is the owner's.
REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations FROM :"service";
-- Tables a later migration adds get the working grants too; re-run this file
-- after a migration that adds another append-only table.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"service";
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"service";
