-- The coordinators' decision store on PostgreSQL (docs/architecture.md,
-- "Where decisions live"; coordinator/dstore_pg.c). Created by the first
-- coordinator that opens it; several coordinator nodes may share one
-- database, each under its own node_id.
--
-- leases: which process of a node is active, and its term. A process
-- becomes active by taking the lease (dtx_store.acquire): only when it is
-- free or expired, and every acquisition raises the term. The active one
-- renews it well within lease_ms (dtx_store.renew); a standby takes it once
-- it has expired.
--
-- records: the node's decision records (coordinator/drec.c's encoding),
-- each row one group commit. A row marked checkpoint replaces every older
-- row of the node. Every write names the term it was made under and is
-- refused unless that term still holds the lease (dtx_store.append, under
-- a lock on the lease row, which a takeover waits for): an old active cut
-- off from the rest can never write after a new one took over and read the
-- records. A write also renews the lease as it ends. (A checkpoint that
-- takes longer to write than the lease lasts, tens of MB of answers kept
-- for idempotency keys, is written in a transaction that first appends
-- nothing, to hold the lease row while the rest travels.)
CREATE SCHEMA IF NOT EXISTS dtx_store;

CREATE TABLE IF NOT EXISTS dtx_store.leases (
    node       text COLLATE "C" PRIMARY KEY,
    term       bigint NOT NULL,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS dtx_store.records (
    node       text COLLATE "C" NOT NULL,
    pos        bigint NOT NULL,
    checkpoint boolean NOT NULL,
    term       bigint NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    data       bytea NOT NULL,
    PRIMARY KEY (node, pos)
);

COMMENT ON TABLE dtx_store.records IS
    'dtx coordinators'' decision records: deleting or editing rows loses decisions.';

-- Takes node's lease for holder when it is free or expired (or held by
-- holder itself), raising the term. Answers the lease as it is now.
CREATE OR REPLACE FUNCTION dtx_store.acquire(n text, h text, lease_ms integer)
RETURNS TABLE (granted boolean, term bigint, holder text, expires_in_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    l dtx_store.leases;
BEGIN
    INSERT INTO dtx_store.leases AS x (node, term, holder, expires_at)
        VALUES (n, 0, '', '-infinity') ON CONFLICT (node) DO NOTHING;
    SELECT * INTO l FROM dtx_store.leases x WHERE x.node = n FOR UPDATE;
    granted := l.expires_at <= clock_timestamp() OR l.holder = h;
    IF granted THEN
        UPDATE dtx_store.leases x SET term = l.term + 1, holder = h,
            expires_at = clock_timestamp() + make_interval(secs => lease_ms / 1000.0)
            WHERE x.node = n RETURNING * INTO l;
    END IF;
    term := l.term;
    holder := l.holder;
    expires_in_ms := greatest(0, (extract(epoch FROM l.expires_at - clock_timestamp()) * 1000)::bigint);
    RETURN NEXT;
END $$;

-- Extends the lease of term t, if t still holds it; false otherwise.
CREATE OR REPLACE FUNCTION dtx_store.renew(n text, t bigint, h text, lease_ms integer)
RETURNS boolean LANGUAGE sql AS $$
    WITH r AS (
        UPDATE dtx_store.leases x
            SET expires_at = clock_timestamp() + make_interval(secs => lease_ms / 1000.0)
            WHERE x.node = n AND x.term = t AND x.holder = h RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM r)
$$;

-- Gives up the lease of term t held by h (a graceful stop, after its last
-- write): a standby takes over at its next try, not when the lease runs out.
CREATE OR REPLACE FUNCTION dtx_store.release(n text, t bigint, h text)
RETURNS boolean LANGUAGE sql AS $$
    WITH r AS (
        UPDATE dtx_store.leases x SET expires_at = '-infinity'
            WHERE x.node = n AND x.term = t AND x.holder = h RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM r)
$$;

-- One group commit of term t, written from position p on: the records
-- queued before a checkpoint, the checkpoint (which drops every older row),
-- the records queued after it; each may be NULL. Refused (DX002) unless t
-- holds the lease, which it then renews for lease_ms. Returns the next
-- position. (Schema version 1's append, without lease_ms, is left in a
-- store made by it, for a coordinator of that version still running.)
CREATE OR REPLACE FUNCTION dtx_store.append(n text, t bigint, p bigint, before bytea,
                                            snap bytea, work bytea, lease_ms integer)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM dtx_store.leases x WHERE x.node = n AND x.term = t FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'coordinator node % lost its lease (term %): another process of it took over', n, t
            USING ERRCODE = 'DX002';
    END IF;
    IF before IS NOT NULL THEN
        INSERT INTO dtx_store.records (node, pos, checkpoint, term, data)
            VALUES (n, p, false, t, before);
        p := p + 1;
    END IF;
    IF snap IS NOT NULL THEN
        INSERT INTO dtx_store.records (node, pos, checkpoint, term, data)
            VALUES (n, p, true, t, snap);
        DELETE FROM dtx_store.records x WHERE x.node = n AND x.pos < p;
        p := p + 1;
    END IF;
    IF work IS NOT NULL THEN
        INSERT INTO dtx_store.records (node, pos, checkpoint, term, data)
            VALUES (n, p, false, t, work);
        p := p + 1;
    END IF;
    UPDATE dtx_store.leases x
        SET expires_at = clock_timestamp() + make_interval(secs => lease_ms / 1000.0)
        WHERE x.node = n AND x.term = t;
    RETURN p;
END $$;

-- schema_version: the version of this schema that made the store
-- (coordinator/dstore_pg.c, STORE_SCHEMA_VERSION). A coordinator runs this
-- file only when the store's version is older than its own, and refuses a
-- store of a newer version: the functions are not replaced at every
-- connect, under an active that calls them, and the role a coordinator
-- connects as needs no right to change them once they exist.
CREATE TABLE IF NOT EXISTS dtx_store.schema_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL
);
