-- dtx participant schema, applied by dtx-participant at every start (idempotent).
--
-- dtx writes nothing into a branch besides the client's own statements:
-- what became of a branch is read from PostgreSQL itself
-- (pg_prepared_xacts while it is prepared, pg_xact_status(xid) afterwards).
-- The only table records which shard this database serves, so that an
-- agent started with the wrong conninfo refuses to run instead of
-- preparing and committing another shard's transactions.
CREATE SCHEMA IF NOT EXISTS dtx;

CREATE TABLE IF NOT EXISTS dtx.agent (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    shard      text NOT NULL,
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE dtx.agent IS
    'The dtx shard this database serves; dtx-participant refuses to start for any other shard.';
