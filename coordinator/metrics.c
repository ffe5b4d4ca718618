/*
 * metrics.c - what the coordinator tells monitoring: GET /healthz (can it
 * take transactions, how are its links) and GET /metrics (Prometheus
 * counters and gauges, prom.h).
 *
 * Counting: each transaction is counted once when it finishes
 * (coord_count_final: committed, aborted by cause, or unknown; one phase
 * and read-only commits beside), never one rebuilt from the store (it was
 * counted by the run that decided it).
 *
 * Thread model: the coordinator's event-loop thread.
 */
#include "coord_impl.h"

#include "dtx/jsonx.h"

#include <stdio.h>
#include <stdlib.h>

void coord_count_final(struct coord *co, struct txent *e)
{
    int code = -tx_error_code(e->tx);

    if (tx_is_replayed(e->tx) || e->counted)
        return;
    e->counted = true;
    switch (tx_outcome(e->tx)) {
    case TXO_COMMITTED:
        co->m.committed++;
        co->m.one_phase += tx_path(e->tx) == TXP_ONE_PHASE;
        co->m.readonly += tx_path(e->tx) == TXP_READONLY;
        break;
    case TXO_ABORTED:
        co->m.aborted++;
        if (code > 0 && code < 32)
            co->m.aborts_by_code[code]++;
        break;
    case TXO_UNKNOWN:
        co->m.unknown++;
        break;
    case TXO_IN_DOUBT:
    case TXO_NONE:
        break;
    }
}

/* The coordinator's own part of /healthz (the shards' links are added by coord_render_health). */
cJSON *coord_health_json(const struct coord *co, unsigned *status)
{
    cJSON *root = jsonx_new_object();
    struct dtx_err why;

    dtx_err_clear(&why);
    *status = coord_accepting(co, &why) ? 200 : 503;
    jsonx_add_str(root, "status", *status == 200 ? "ok" : "unavailable");
    if (*status != 200)
        jsonx_add(root, "error", jsonx_error_obj(&why));
    jsonx_add_str(root, "role", "active");
    jsonx_add_str(root, "node_id", co->cfg->node_id);
    jsonx_add_num(root, "epoch", (double)co->epoch);
    jsonx_add_num(root, "live_transactions", (double)co->tab.nlive);
    coord_gaps_json(co, root);
    return root;
}

char *coord_render_health(const struct coord *co, unsigned *status)
{
    cJSON *root = coord_health_json(co, status);
    cJSON *shards = jsonx_new_object();
    char *s;

    for (size_t i = 0; i < co->cfg->nshards; i++)
        jsonx_add_str(shards, co->shard_names[i], coord_link_state(co, (int)i));
    jsonx_add(root, "shards", shards);
    s = jsonx_print(root);
    cJSON_Delete(root);
    return s;
}

static void transactions(struct prom *p, const struct coord *co)
{
    static const char name[] = "dtx_transactions_total";

    prom_family(p, name, "counter", "Transactions by outcome.");
    prom_sample(p, name, "outcome", "started", (double)co->m.started);
    prom_sample(p, name, "outcome", "committed", (double)co->m.committed);
    prom_sample(p, name, "outcome", "aborted", (double)co->m.aborted);
    prom_sample(p, name, "outcome", "unknown", (double)co->m.unknown);
    prom_sample(p, name, "outcome", "in_doubt", (double)co->m.in_doubt);
    prom_family(p, "dtx_aborts_total", "counter", "Aborted transactions by error code.");
    for (int code = 1; code < 32; code++) {
        if (co->m.aborts_by_code[code])
            prom_sample(p, "dtx_aborts_total", "code", dtx_err_name(-code),
                        (double)co->m.aborts_by_code[code]);
    }
    prom_counter(p, "dtx_one_phase_commits_total", "Commits of a single shard, in one phase.",
                 (double)co->m.one_phase);
    prom_counter(p, "dtx_readonly_commits_total",
                 "Commits where every shard voted read-only (nothing to commit).",
                 (double)co->m.readonly);
    prom_counter(p, "dtx_idempotent_replays_total",
                 "Requests answered from an earlier transaction with the same idempotency key.",
                 (double)co->m.idem_replays);
    prom_gauge(p, "dtx_transactions_live", "Transactions in flight.", (double)co->tab.nlive);
    prom_family(p, "dtx_heuristic_outcomes_total", "counter",
                "Branches a shard finished otherwise than decided (mixed) or whose fate it "
                "cannot prove (hazard), found in this run.");
    prom_sample(p, "dtx_heuristic_outcomes_total", "kind", "mixed", (double)co->m.heuristic[0]);
    prom_sample(p, "dtx_heuristic_outcomes_total", "kind", "hazard", (double)co->m.heuristic[1]);
    prom_gauge(p, "dtx_heuristic_transactions",
               "Transactions with a heuristic outcome no operator has settled yet.",
               (double)coord_heur_unsettled(co));
    prom_counter(p, "dtx_transactions_refused_total",
                 "Transactions refused with 429 (max_active_transactions).", (double)co->m.refused);
    prom_gauge(p, "dtx_transactions_retained", "Finished transactions kept in memory.",
               (double)co->tab.nretained);
    prom_gauge(p, "dtx_retained_bytes", "Bytes of answers kept for idempotent retries.",
               (double)co->tab.retained_bytes);
}

static void store(struct prom *p, const struct coord *co)
{
    struct dstore_stats st;

    dstore_stats(co->store, &st);
    prom_counter(p, "dtx_decision_log_records_total", "Decision records appended.",
                 (double)st.records);
    prom_counter(p, "dtx_decision_log_syncs_total",
                 "Durable writes of the decision log (each one group of records).",
                 (double)st.syncs);
    prom_counter(p, "dtx_decision_log_checkpoints_total", "Checkpoints written.",
                 (double)st.checkpoints);
    prom_counter(p, "dtx_decision_log_bytes_total", "Bytes written to the decision log.",
                 (double)st.bytes);
    prom_counter(p, "dtx_decision_log_sync_seconds_total",
                 "Time spent writing and syncing the decision log.", st.sync_us / 1e6);
    prom_gauge(p, "dtx_decision_log_failed",
               "1 once the decision log failed (no transactions are taken).",
               co->state == CO_FAILED);
}

char *coord_render_metrics(const struct coord *co)
{
    struct prom p;

    prom_init(&p);
    transactions(&p, co);
    store(&p, co);
    prom_family(&p, "dtx_participant_up", "gauge", "1 while the link to a shard's agent is up.");
    for (size_t i = 0; i < co->cfg->nshards; i++)
        prom_sample(&p, "dtx_participant_up", "shard", co->shard_names[i],
                    coord_link_up(co, (int)i));
    return prom_finish(&p);
}
