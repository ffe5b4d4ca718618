/*
 * replay.c - the coordinator's memory across restarts: opening the
 * decision store and replaying it, recovery, checkpoints, and this run's
 * epoch.
 *
 * Replay: a BOOT record raises the epoch; a COMMIT record becomes a
 * transaction in memory (tx_set_replayed); an END record marks it
 * finished; an OPERATOR record becomes an operator note. Recovery then
 * steps every replayed transaction: one with END is committed and only
 * retained (for idempotent retries), one without is a decided commit whose
 * phase 2 may be unfinished, so it resends COMMIT PREPARED as each
 * participant connects (TXE_RECOVER).
 *
 * Epoch: before taking any transaction a run makes a checkpoint holding a
 * BOOT record with a new epoch durable, so gtids (node-epoch-seq) never
 * repeat across restarts. A store restored from an older copy (or lost)
 * would start at an epoch used before: participants remember the newest
 * run of each node and refuse one behind it, saying which epoch they saw
 * (pc.h, on_behind). The run then moves past (coord_move_past): a GAP
 * record for the unknown epochs, a new epoch, durable before any link is
 * dialled again; gtids in the gap are never presumed aborted.
 *
 * Checkpoint: everything replay still needs, so that the store can drop
 * what came before. That is the epoch (BOOT), every decided commit not yet
 * acknowledged by all its shards, including those whose record is still
 * being forced (their record is written before the snapshot, so the
 * snapshot can only be durable after it), the committed transactions with
 * an idempotency key still retained (COMMIT and END, so retries keep
 * getting their answer), and the operator notes. What a transaction
 * contributes is the protocol's to say (tx_checkpoint_keep). Aborted and
 * retained transactions without a key are left out: a status query about
 * those answers 404 after a restart.
 *
 * Thread model: the coordinator's event-loop thread (replay runs inside
 * coord_new, before the loop serves anything).
 */
#include "coord_impl.h"

#include "dtx/dlog.h"
#include "dtx/dstore_pg.h"
#include "dtx/idemkey.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int replay_commit(struct coord *co, const struct drec *rec, struct dtx_err *err)
{
    struct tx_params p = {
        .gtid = rec->gtid,
        .protocol = rec->protocol,
        .req_hash = rec->req_hash,
    };
    struct txent *e = txtab_find(&co->tab, rec->gtid);
    char *client;

    if (e && rec->type == DREC_COMMIT && tx_lsn(e->tx) == 0) {
        tx_set_replayed(e->tx, rec->wall_us, rec->results); /* 3PC: pre-committed, then decided */
        return 0;
    }
    if (e)
        return 0;
    for (size_t i = 0; i < rec->nbranches; i++) {
        if (coord_config_shard(co->cfg, rec->branches[i].shard) < 0)
            return dtx_err_set(err, DTX_EINVAL,
                               "decision log: committed transaction %s has a branch on shard "
                               "'%s', which is not in the config",
                               rec->gtid, rec->branches[i].shard);
    }
    idemkey_split(rec->idem_key, &client, &p.idem_key); /* the record names its client */
    p.client = client;
    e = coord_new_tx(co, &p);
    free(client);
    for (size_t i = 0; i < rec->nbranches; i++)
        tx_add_prepared_branch(e->tx, coord_config_shard(co->cfg, rec->branches[i].shard),
                               rec->branches[i].xid, rec->branches[i].db);
    if (rec->type == DREC_PRECOMMIT)
        tx_set_precommitted(e->tx, rec->wall_us, rec->results);
    else
        tx_set_replayed(e->tx, rec->wall_us, rec->results);
    return 0;
}

static void replay_operator(struct coord *co, const struct drec *rec)
{
    struct coord_opnote n = {
        .kind = rec->op_kind,
        .commit = rec->op_commit,
        .who = (char *)rec->who,
        .reason = (char *)rec->reason,
        .wall_us = rec->wall_us,
    };

    snprintf(n.shard, sizeof(n.shard), "%s", rec->shard ? rec->shard : "");
    coord_notes_add(co, rec->gtid, &n);
}

static void replay_gap(struct coord *co, const struct drec *rec)
{
    struct coord_gap g = {.lo = rec->epoch, .hi = rec->epoch_hi, .wall_us = rec->wall_us};

    snprintf(g.shard, sizeof(g.shard), "%s", rec->shard ? rec->shard : "");
    coord_gap_add(co, &g);
    if (rec->epoch_hi > co->epoch)
        co->epoch = rec->epoch_hi; /* the next run starts past it */
}

static void replay_heuristic(struct coord *co, const struct drec *rec)
{
    struct coord_heur h = {.kind = (enum drec_heur_kind)rec->heur_kind,
                           .commit = rec->op_commit,
                           .what = (char *)rec->reason,
                           .wall_us = rec->wall_us};
    struct txent *e = txtab_find(&co->tab, rec->gtid);
    int shard = coord_config_shard(co->cfg, rec->shard ? rec->shard : "");

    snprintf(h.shard, sizeof(h.shard), "%s", rec->shard ? rec->shard : "");
    coord_heur_add(co, rec->gtid, &h);
    if (e && shard >= 0)
        tx_set_heuristic(e->tx, shard, h.kind);
}

static int on_replay(void *arg, const struct drec *rec, struct dtx_err *err)
{
    struct coord *co = arg;
    struct txent *e;

    switch (rec->type) {
    case DREC_BOOT:
        if (rec->epoch > co->epoch)
            co->epoch = rec->epoch;
        return 0;
    case DREC_COMMIT:
    case DREC_PRECOMMIT:
        return replay_commit(co, rec, err);
    case DREC_PROMISE:
    case DREC_ACCEPT:
        coord_acc_replay(co, rec);
        return 0;
    case DREC_LEARNED:
        if ((e = txtab_find(&co->tab, rec->gtid)))
            e->learned = rec->value;
        return 0;
    case DREC_END:
        if ((e = txtab_find(&co->tab, rec->gtid)))
            e->log_ended = true;
        return 0;
    case DREC_OPERATOR:
        replay_operator(co, rec);
        return 0;
    case DREC_GAP:
        replay_gap(co, rec);
        return 0;
    case DREC_HEURISTIC:
        replay_heuristic(co, rec);
        return 0;
    }
    return 0;
}

struct recovery {
    struct coord *co;
    size_t unfinished;
};

static void recover_one(void *arg, struct txent *e)
{
    struct recovery *r = arg;
    uint64_t now = ev_wall_us(), decided = 0;

    coord_acc_apply(r->co, e);
    if (tx_protocol(e->tx) == 3 && tx_lsn(e->tx) == 0) {
        /* pre-committed, its decision unknown here: the participants settle it */
        tx_step(e->tx, TXE_RECOVER_PRECOMMITTED, NULL);
        if (e->learned)
            tx_step(e->tx, e->learned == BV_COMMIT ? TXE_LEARNED_COMMIT : TXE_LEARNED_ABORT, NULL);
        r->unfinished++;
        return;
    }
    if (e->log_ended) {
        tx_step(e->tx, TXE_RECOVER_DONE, NULL);
        decided = tx_decided_wall_us(e->tx);
        txtab_backdate(&r->co->tab, e, ev_now_us(r->co->loop), now > decided ? now - decided : 0);
        return;
    }
    r->unfinished++;
    tx_step(e->tx, TXE_RECOVER, NULL);
    coord_apply_forgets(r->co, e);
}

/* Turns what replay found into live or retained transactions. */
static void recover(struct coord *co)
{
    struct recovery r = {.co = co};

    txtab_each_live(&co->tab, recover_one, &r);
    if (r.unfinished)
        log_info("recovery: %zu committed transactions still need COMMIT PREPARED on some shard",
                 r.unfinished);
}

static int take_checkpoint(struct coord *co)
{
    struct buf snap = BUF_INIT;
    struct drec boot = {
        .type = DREC_BOOT,
        .epoch = co->epoch,
        .wall_us = ev_wall_us(),
        .node_id = co->cfg->node_id,
    };

    drec_encode(&snap, &boot);
    txtab_encode_checkpoint(&co->tab, &snap);
    coord_notes_encode(co, &snap);
    coord_heurs_encode(co, &snap);
    coord_acc_encode(co, &snap);
    return dstore_checkpoint(co->store, &snap);
}

void coord_checkpoint_wanted(void *arg)
{
    struct coord *co = arg;

    if (take_checkpoint(co) == 0)
        log_debug("decision log: checkpoint handed to the writer");
}

/* The first checkpoint of a run carries the new epoch, so gtids never repeat. */
static int write_boot(struct coord *co, struct dtx_err *err)
{
    co->run_epoch = ++co->epoch;
    if (take_checkpoint(co) < 0)
        return dstore_failed(co->store, err) ? err->code : DTX_EIO;
    return dstore_flush(co->store, err);
}

/*
 * A participant saw epoch `seen` of this node from another run: the store is
 * behind. Gtids of the epochs from the store's last run (a copy taken while
 * it ran lacks its end) to `seen` become unknown; this run takes seen + 1.
 *
 * With the postgres store the same holds: its database was restored from a
 * copy, or failed over to a standby that lacked its last rows. Another
 * process of this node that took over would also show a newer epoch, but
 * then this run's lease is gone and the GAP record below is refused by the
 * store's fence: the store fails and this process steps down, having written
 * nothing. Stepping down at once instead would leave the gap unrecorded, and
 * the next run would presume its gtids aborted.
 */
void coord_move_past(struct coord *co, int shard, uint64_t seen)
{
    uint64_t lo = co->epoch == co->run_epoch && co->run_epoch > 1 ? co->run_epoch - 1 : co->epoch;
    struct coord_gap g = {.lo = lo, .hi = seen, .wall_us = ev_wall_us()};
    struct drec rec;
    struct dtx_err err;

    if (seen < co->epoch || co->state == CO_FAILED)
        return;
    snprintf(g.shard, sizeof(g.shard), "%s", co->shard_names[shard]);
    log_error("the participant of shard '%s' has seen epoch %" PRIu64 " of coordinator '%s' "
              "from another run, but this decision %s knows epochs before %" PRIu64 " only: it "
              "was restored from an older copy, or lost%s. Gtids of epochs %" PRIu64 "..%" PRIu64
              " (the log's last run too: a copy may lack its end) without a record here are "
              "unknown and never presumed aborted: see docs/operations.md, \"The decision log "
              "was restored or lost\". Moving to epoch %" PRIu64,
              co->shard_names[shard], seen, co->cfg->node_id, co->lease ? "store" : "log",
              co->epoch,
              co->lease ? " (or another process of this node took over: then the store refuses "
                          "this run's write and it steps down)"
                        : "",
              g.lo, g.hi, seen + 1);
    rec = (struct drec){
        .type = DREC_GAP, .epoch = g.lo, .epoch_hi = g.hi, .wall_us = g.wall_us, .shard = g.shard};
    coord_gap_add(co, &g);
    co->epoch = seen + 1;
    co->seq = 0;
    dtx_err_clear(&err);
    if (!dstore_append(co->store, &rec, true) || take_checkpoint(co) < 0 ||
        dstore_flush(co->store, &err) < 0) {
        log_error("could not record the new epoch: %s", err.msg[0] ? err.msg : "store failed");
        return; /* the store failed: on_failed stops the coordinator */
    }
    coord_links_set_epoch(co);
}

static int open_file_store(struct coord *co, struct dtx_err *err)
{
    struct dlog_opts o = {
        .dir = co->cfg->log_dir,
        .segment_bytes = co->cfg->log_segment_bytes,
        .prealloc_bytes = co->cfg->log_prealloc_bytes,
        .group_delay_us = co->cfg->log_group_delay_us,
        .group_siblings = co->cfg->log_group_siblings,
        .loop = co->loop,
        .cbs = co->store_cbs,
    };
    struct dlog_scan scan;
    int rc = dlog_open(&co->store, &o, on_replay, co, &scan, err);

    if (rc < 0)
        return rc;
    log_info("decision log '%s': %" PRIu64 " records in %" PRIu64 " segments (%" PRIu64 " bytes)%s",
             co->cfg->log_dir, scan.records, scan.segments, scan.bytes,
             !scan.torn       ? ""
             : scan.torn_zero ? "; its preallocated zeros were cut off"
                              : "; a torn last write was cut off");
    return 0;
}

/* The postgres store, for the term this process's lease holds (dstore_pg.h). */
static int open_pg_store(struct coord *co, struct dtx_err *err)
{
    struct dstore_pg_opts o = {
        .conninfo = co->cfg->store_conninfo,
        .node = co->cfg->node_id,
        .holder = co->lease->holder,
        .lease_ms = co->cfg->store_lease_ms,
        .allow_fsync_off = co->cfg->store_allow_fsync_off,
        .group_delay_us = co->cfg->log_group_delay_us,
        .group_siblings = co->cfg->log_group_siblings,
        .loop = co->loop,
        .cbs = co->store_cbs,
    };
    uint64_t records = 0, started = ev_clock_us();
    int rc = dstore_pg_open(&co->store, &o, co->lease->term, on_replay, co, &records, err);

    if (rc < 0)
        return rc;
    log_info("decision store (postgres): node '%s', term %" PRIu64 ": %" PRIu64
             " records read in %" PRIu64 " ms",
             co->cfg->node_id, co->lease->term, records, (ev_clock_us() - started) / 1000);
    return 0;
}

int coord_open_store(struct coord *co, struct dtx_err *err)
{
    int rc = co->cfg->store_type == COORD_STORE_POSTGRES ? open_pg_store(co, err)
                                                         : open_file_store(co, err);

    if (rc < 0)
        return rc;
    recover(co);
    return write_boot(co, err);
}
