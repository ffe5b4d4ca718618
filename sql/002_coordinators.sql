-- The coordinators this shard has served, and the newest run of each that it
-- has seen: its epoch and boot id, recorded (and committed) before the run's
-- peer stream is accepted, so before any branch of that epoch can exist here.
--
-- A coordinator whose decision log was restored from an older copy, or lost,
-- would start again at an epoch it used before and issue the same gtids
-- again. The agent refuses a run whose epoch is lower than one it has seen,
-- or equal to it under another boot id, and says which epoch it has seen;
-- the coordinator then moves past it (docs/operations.md).
CREATE TABLE IF NOT EXISTS dtx.coordinators (
    node    text PRIMARY KEY,
    epoch   bigint NOT NULL,
    boot    text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE dtx.coordinators IS
    'The newest run (epoch, boot id) of each dtx coordinator this shard has accepted.';
