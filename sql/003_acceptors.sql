-- Three-phase commit: this shard's acceptor state, one row per 3PC
-- transaction it has heard of (docs/protocol.md, "Three-phase commit").
--
-- The decision of a 3PC transaction is single-decree Paxos on the value
-- commit or abort among the coordinator and the transaction's participants.
-- A participant keeps its part here, each change committed in a local
-- transaction of its own, and flushed (synchronous_commit on for it, whatever
-- the database's setting), before the agent answers: the highest ballot it
-- promised, the ballot and value it accepted, whether its branch was
-- fenced (a recovery leader asked before the branch prepared: it must
-- never prepare now), and the decision once known. PostgreSQL has no place
-- for this inside the prepared transaction, whose writes nobody sees.
--
-- Ballots are (counter, node), compared by counter, then node bytewise
-- (COLLATE "C"), exactly as common/ballot.c compares them.
CREATE TABLE IF NOT EXISTS dtx.acceptors (
    gtid             text COLLATE "C" PRIMARY KEY,
    peers            jsonb NOT NULL DEFAULT '{}',
    promised_counter bigint NOT NULL DEFAULT 0,
    promised_node    text COLLATE "C" NOT NULL DEFAULT '',
    accepted_counter bigint,
    accepted_node    text COLLATE "C",
    accepted_value   text CHECK (accepted_value IN ('commit', 'abort')),
    fenced           boolean NOT NULL DEFAULT false,
    decided          text CHECK (decided IN ('commit', 'abort')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE dtx.acceptors IS
    'dtx three-phase commit: what this shard promised and accepted for each transaction.';

-- The lock a 3PC branch's transaction holds (shared) from its first
-- statement until it is prepared and finished, and a fence takes
-- (exclusive, without waiting): a fence can only happen while no branch
-- transaction of that gtid runs or is prepared.
CREATE OR REPLACE FUNCTION dtx.branch_key(g text) RETURNS bigint
    LANGUAGE sql IMMUTABLE AS $$ SELECT hashtextextended(g, 3) $$;

-- The first statement of a 3PC branch: refuses a branch whose transaction
-- was fenced or decided here already.
CREATE OR REPLACE FUNCTION dtx.branch_begin(g text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(dtx.branch_key(g));
    IF EXISTS (SELECT 1 FROM dtx.acceptors a
               WHERE a.gtid = g AND (a.fenced OR a.decided IS NOT NULL)) THEN
        RAISE EXCEPTION 'transaction % was decided here without this branch; it may not run now', g
            USING ERRCODE = 'DX001';
    END IF;
END $$;

-- After PREPARE TRANSACTION and before the yes vote: the transaction's
-- acceptors, so that this shard can finish it without the coordinator.
CREATE OR REPLACE FUNCTION dtx.acceptor_register(g text, p jsonb) RETURNS void
LANGUAGE sql AS $$
    SELECT set_config('synchronous_commit', 'on', true);
    INSERT INTO dtx.acceptors AS a (gtid, peers) VALUES (g, p)
    ON CONFLICT (gtid) DO UPDATE SET peers = EXCLUDED.peers, updated_at = now()
        WHERE a.peers = '{}'::jsonb
$$;

-- PROMISE-REQ(c, n): granted when (c, n) is above every ballot promised
-- here. A branch that is neither prepared nor fenced is fenced first; when
-- its transaction runs (busy), nothing changes and the agent cancels the
-- branch and asks again.
CREATE OR REPLACE FUNCTION dtx.acceptor_promise(g text, p jsonb, c bigint, n text, branch_gid text)
RETURNS TABLE (granted boolean, busy boolean, branch text, promised_counter bigint,
               promised_node text, accepted_counter bigint, accepted_node text,
               accepted_value text, decided text)
LANGUAGE plpgsql AS $$
DECLARE
    r dtx.acceptors;
    prepared boolean;
BEGIN
    PERFORM set_config('synchronous_commit', 'on', true); -- answered once durable
    INSERT INTO dtx.acceptors (gtid, peers) VALUES (g, coalesce(p, '{}'::jsonb))
        ON CONFLICT (gtid) DO NOTHING;
    SELECT * INTO r FROM dtx.acceptors a WHERE a.gtid = g FOR UPDATE;
    prepared := EXISTS (SELECT 1 FROM pg_prepared_xacts x
                        WHERE x.gid = branch_gid AND x.database = current_database());
    granted := false;
    busy := false;
    IF (c, n COLLATE "C") > (r.promised_counter, r.promised_node) THEN
        IF NOT prepared AND NOT r.fenced AND r.decided IS NULL THEN
            IF pg_try_advisory_xact_lock(dtx.branch_key(g)) THEN
                r.fenced := true;
            ELSE
                busy := true;
            END IF;
        END IF;
        IF NOT busy THEN
            UPDATE dtx.acceptors a SET promised_counter = c, promised_node = n,
                fenced = r.fenced, updated_at = now()
                WHERE a.gtid = g;
            r.promised_counter := c;
            r.promised_node := n;
            granted := true;
        END IF;
    END IF;
    branch := CASE WHEN prepared THEN 'prepared' WHEN r.fenced THEN 'fenced' ELSE 'none' END;
    promised_counter := r.promised_counter;
    promised_node := r.promised_node;
    accepted_counter := r.accepted_counter;
    accepted_node := r.accepted_node;
    accepted_value := r.accepted_value;
    decided := r.decided;
    RETURN NEXT;
END $$;

-- ACCEPT(c, n, v): accepted when (c, n) is not below the promise.
CREATE OR REPLACE FUNCTION dtx.acceptor_accept(g text, p jsonb, c bigint, n text, v text)
RETURNS TABLE (accepted boolean, promised_counter bigint, promised_node text)
LANGUAGE plpgsql AS $$
DECLARE
    r dtx.acceptors;
BEGIN
    PERFORM set_config('synchronous_commit', 'on', true); -- answered once durable
    INSERT INTO dtx.acceptors (gtid, peers) VALUES (g, coalesce(p, '{}'::jsonb))
        ON CONFLICT (gtid) DO NOTHING;
    SELECT * INTO r FROM dtx.acceptors a WHERE a.gtid = g FOR UPDATE;
    accepted := (c, n COLLATE "C") >= (r.promised_counter, r.promised_node);
    IF accepted THEN
        UPDATE dtx.acceptors a SET promised_counter = c, promised_node = n,
            accepted_counter = c, accepted_node = n, accepted_value = v, updated_at = now()
            WHERE a.gtid = g;
        r.promised_counter := c;
        r.promised_node := n;
    END IF;
    promised_counter := r.promised_counter;
    promised_node := r.promised_node;
    RETURN NEXT;
END $$;

-- The decision, once known here (from the coordinator or a recovery leader).
CREATE OR REPLACE FUNCTION dtx.acceptor_decided(g text, v text) RETURNS void
LANGUAGE sql AS $$
    SELECT set_config('synchronous_commit', 'on', true);
    INSERT INTO dtx.acceptors AS a (gtid, decided) VALUES (g, v)
    ON CONFLICT (gtid) DO UPDATE SET decided = v, updated_at = now()
$$;

-- Forgets this shard's acceptor state of the transactions in g (a JSON
-- array of gtids): every participant has finished its branch (their
-- coordinator had all their acknowledgements), so no recovery round will
-- ask for it again. A row whose branch is still prepared here is kept. The
-- commit is not waited for: a deletion lost in a crash leaves a row behind,
-- nothing else. Returns how many rows went.
CREATE OR REPLACE FUNCTION dtx.acceptors_forget(g jsonb, shard text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM dtx.acceptors a
        WHERE a.gtid IN (SELECT jsonb_array_elements_text(g))
          AND 'dtx:' || a.gtid || ':' || shard NOT IN
              (SELECT x.gid FROM pg_prepared_xacts x WHERE x.database = current_database());
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
