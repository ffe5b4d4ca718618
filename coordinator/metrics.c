/*
 * metrics.c - what the coordinator tells monitoring: GET /healthz (can it
 * take transactions, how are its links) and GET /metrics (Prometheus
 * counters and gauges, prom.h).
 *
 * Counting: each transaction is counted once when it reaches an outcome
 * (coord_count_final: committed, aborted by cause, unknown, or in doubt
 * when the decision log failed under its commit; one phase and read-only
 * commits beside), never one rebuilt from the store (it was counted by the
 * run that decided it). A 3PC transaction whose record the failed log
 * could not force goes on to learn the participants' outcome: it is
 * counted then, not as in doubt.
 *
 * Histograms (prom.h): each transaction's duration, by protocol (2pc,
 * 3pc: what the client asked for; a one-shard transaction's one-phase
 * commit is the "one_phase" phase, not a protocol) and outcome, observed
 * when it is counted; and the time it spent in each phase of the protocol
 * (tx_env.phase_done -> coord_on_phase). Gauges computed when scraped:
 * every live transaction is in flight or in doubt (tx_is_in_doubt), and
 * each participant link's state. No label ever carries a gtid: the number
 * of series is fixed by the config (shards), never by the traffic.
 *
 * Thread model: the coordinator's event-loop thread (the decision store's
 * histograms come from dstore_stats, which copies them under its lock).
 */
#include "coord_impl.h"

#include "dtx/jsonx.h"
#include "dtx/version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const protocol_names[2] = {"2pc", "3pc"};
/* By enum tx_outcome - 1. */
static const char *const outcome_names[4] = {"committed", "aborted", "unknown", "in_doubt"};

static int protocol_index(const struct tx *tx)
{
    return tx_protocol(tx) == 3 ? 1 : 0;
}

void coord_metrics_init(struct coord_metrics *m)
{
    memset(m, 0, sizeof(*m));
    for (int p = 0; p < 2; p++) {
        for (int o = 0; o < 4; o++)
            prom_hist_init(&m->duration[p][o], &prom_seconds_buckets);
        for (int ph = 0; ph < TX_NPHASES; ph++)
            prom_hist_init(&m->phase[p][ph], &prom_seconds_buckets);
    }
}

void coord_on_phase(struct tx *tx, enum tx_phase ph, uint64_t us)
{
    struct coord *co = tx_ctx(tx);

    if ((unsigned)ph < TX_NPHASES)
        prom_hist_observe(&co->m.phase[protocol_index(tx)][ph], us / 1e6);
}

void coord_count_final(struct coord *co, struct txent *e)
{
    int code = -tx_error_code(e->tx);
    enum tx_outcome outcome = tx_outcome(e->tx);

    if (tx_is_replayed(e->tx) || e->counted || outcome == TXO_NONE)
        return;
    e->counted = true;
    prom_hist_observe(&co->m.duration[protocol_index(e->tx)][outcome - 1],
                      tx_elapsed_us(e->tx) / 1e6);
    switch (outcome) {
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
        co->m.in_doubt++;
        break;
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
    jsonx_add_str(root, "boot_id", co->boot); /* what a standby's lease.holder names */
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

static void histograms(struct prom *p, const struct coord *co)
{
    static const char dur[] = "dtx_transaction_duration_seconds";
    static const char phase[] = "dtx_transaction_phase_seconds";

    prom_family(p, dur, "histogram",
                "Time from a transaction's start to its outcome, by protocol and outcome (an "
                "interactive one's includes its client's calls).");
    for (int pr = 0; pr < 2; pr++) {
        for (int o = 0; o < 4; o++) {
            struct prom_label l[] = {{"protocol", protocol_names[pr]},
                                     {"outcome", outcome_names[o]}};

            prom_histogram(p, dur, l, 2, &co->m.duration[pr][o]);
        }
    }
    prom_family(p, phase, "histogram",
                "Time transactions spent in each phase of the protocol, by protocol and phase.");
    for (int pr = 0; pr < 2; pr++) {
        for (int ph = 0; ph < TX_NPHASES; ph++) {
            struct prom_label l[] = {{"protocol", protocol_names[pr]},
                                     {"phase", tx_phase_name((enum tx_phase)ph)}};

            if (pr == 0 && tx_phase_is_3pc((enum tx_phase)ph))
                continue;
            prom_histogram(p, phase, l, 2, &co->m.phase[pr][ph]);
        }
    }
}

struct live_count {
    uint64_t in_flight[2], in_doubt[2];
};

static void count_live(void *arg, struct txent *e)
{
    struct live_count *c = arg;
    int pr = protocol_index(e->tx);

    if (tx_is_in_doubt(e->tx))
        c->in_doubt[pr]++;
    else
        c->in_flight[pr]++;
}

/* In flight and in doubt, by protocol: every live transaction is one or the other. */
static void live(struct prom *p, const struct coord *co)
{
    struct live_count c = {{0, 0}, {0, 0}};

    txtab_each_live(&co->tab, count_live, &c);
    prom_family(p, "dtx_transactions_in_flight", "gauge",
                "Transactions under way (begun, not finished, not in doubt), by protocol.");
    for (int pr = 0; pr < 2; pr++)
        prom_sample(p, "dtx_transactions_in_flight", "protocol", protocol_names[pr],
                    (double)c.in_flight[pr]);
    prom_family(p, "dtx_transactions_in_doubt", "gauge",
                "Transactions whose branches may be prepared and that cannot be finished now: "
                "a participant lost or not acknowledging phase 2, 3PC waiting for the "
                "participants' decision, or the decision log failed under the commit.");
    for (int pr = 0; pr < 2; pr++)
        prom_sample(p, "dtx_transactions_in_doubt", "protocol", protocol_names[pr],
                    (double)c.in_doubt[pr]);
}

/* One family of the per-client metrics: which value of each named client. */
struct client_family {
    struct prom *p;
    const char *name;
    int which; /* 0: live, 1: keys held, 2: refused */
};

static void client_sample(void *arg, const struct txtab_client *c)
{
    const struct client_family *f = arg;
    double v = f->which == 0   ? (double)c->nlive
               : f->which == 1 ? (double)c->nkeyed
                               : (double)c->refused;

    prom_sample(f->p, f->name, "client", c->name, v);
}

/* Each named client's share (auth.clients), once it has sent a transaction. */
static void client_metrics(const struct coord *co, struct prom *p)
{
    static const char *const fams[3][3] = {
        {"dtx_client_transactions_live", "gauge", "A named client's transactions in flight."},
        {"dtx_client_retained_keys", "gauge",
         "A named client's finished transactions with an idempotency key, held."},
        {"dtx_client_refused_total", "counter",
         "A named client's transactions refused with 429 over its own limits."},
    };

    if (co->tab.by_client.count == 0)
        return;
    for (int i = 0; i < 3; i++) {
        struct client_family f = {.p = p, .name = fams[i][0], .which = i};

        prom_family(p, fams[i][0], fams[i][1], fams[i][2]);
        txtab_each_client(&co->tab, client_sample, &f);
    }
}

static void transactions(struct prom *p, const struct coord *co)
{
    static const char name[] = "dtx_transactions_total";

    prom_counter(p, "dtx_transactions_started_total",
                 "Transactions begun by this run (idempotent replays and refusals not counted).",
                 (double)co->m.started);
    prom_family(p, name, "counter",
                "Transactions this run finished, each once, by outcome (in_doubt: the decision "
                "log failed while its commit was forced; settled at restart).");
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
    prom_gauge(p, "dtx_transactions_live",
               "Transactions in memory and not finished (in flight plus in doubt).",
               (double)co->tab.nlive);
    prom_family(p, "dtx_heuristic_outcomes_total", "counter",
                "Branches a shard finished otherwise than decided (mixed) or whose fate it "
                "cannot prove (hazard), found in this run.");
    prom_sample(p, "dtx_heuristic_outcomes_total", "kind", "mixed", (double)co->m.heuristic[0]);
    prom_sample(p, "dtx_heuristic_outcomes_total", "kind", "hazard", (double)co->m.heuristic[1]);
    prom_gauge(p, "dtx_heuristic_transactions",
               "Transactions with a heuristic outcome no operator has settled yet.",
               (double)coord_heur_unsettled(co));
    prom_counter(p, "dtx_transactions_refused_total",
                 "Transactions refused with 429 (max_active_transactions, retention_max, or a "
                 "named client's own limits).",
                 (double)co->m.refused);
    client_metrics(co, p);
    prom_gauge(p, "dtx_transactions_retained", "Finished transactions kept in memory.",
               (double)co->tab.nretained);
    prom_gauge(p, "dtx_retained_bytes", "Bytes of answers kept for idempotent retries.",
               (double)co->tab.retained_bytes);
}

static void store(struct prom *p, const struct coord *co)
{
    struct dstore_stats st;

    memset(&st, 0, sizeof(st)); /* a store that keeps no histograms shows empty ones */
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
    prom_family(p, "dtx_decision_log_write_seconds", "histogram",
                "Time each write of a frame of the decision log took, before its fdatasync.");
    prom_histogram(p, "dtx_decision_log_write_seconds", NULL, 0, &st.write_seconds);
    prom_family(p, "dtx_decision_log_fsync_seconds", "histogram",
                "Time each fdatasync of the decision log took (what makes a group of decisions "
                "durable).");
    prom_histogram(p, "dtx_decision_log_fsync_seconds", NULL, 0, &st.sync_seconds);
    prom_family(p, "dtx_decision_log_batch_records", "histogram",
                "Records made durable together by one group commit.");
    prom_histogram(p, "dtx_decision_log_batch_records", NULL, 0, &st.batch_records);
    prom_gauge(p, "dtx_decision_log_failed",
               "1 once the decision log failed (no transactions are taken).",
               co->state == CO_FAILED);
}

static void links(struct prom *p, const struct coord *co)
{
    static const char *const states[] = {"up", "connecting", "down"};
    static const char state[] = "dtx_participant_link_state";

    prom_family(p, "dtx_participant_up", "gauge", "1 while the link to a shard's agent is up.");
    for (size_t i = 0; i < co->cfg->nshards; i++)
        prom_sample(p, "dtx_participant_up", "shard", co->shard_names[i],
                    coord_link_up(co, (int)i));
    prom_family(p, state, "gauge",
                "The link to each shard's agent: 1 for the state it is in (up; connecting: not "
                "tried yet; down), 0 for the others.");
    for (size_t i = 0; i < co->cfg->nshards; i++) {
        const char *now = coord_link_state(co, (int)i);

        for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
            struct prom_label l[] = {{"shard", co->shard_names[i]}, {"state", states[k]}};

            prom_sample_labels(p, state, l, 2, strcmp(now, states[k]) == 0);
        }
    }
}

/* Who this process is, and whether it is its node's active one (exactly one per node). */
static void identity(struct prom *p, const char *node_id, bool active)
{
    struct prom_label info[] = {{"node", node_id}, {"version", DTX_VERSION}};

    prom_family(p, "dtx_coordinator_info", "gauge",
                "1, labelled with this coordinator's node id and version.");
    prom_sample_labels(p, "dtx_coordinator_info", info, 2, 1);
    prom_family(p, "dtx_coordinator_active", "gauge",
                "1 when this process is its node's active coordinator, 0 for a standby.");
    prom_sample(p, "dtx_coordinator_active", "node", node_id, active ? 1 : 0);
}

char *coord_render_standby_metrics(const char *node_id)
{
    struct prom p;

    prom_init(&p);
    identity(&p, node_id, false);
    return prom_finish(&p);
}

char *coord_render_metrics(const struct coord *co)
{
    struct prom p;

    prom_init(&p);
    identity(&p, co->cfg->node_id, true);
    transactions(&p, co);
    histograms(&p, co);
    live(&p, co);
    store(&p, co);
    links(&p, co);
    return prom_finish(&p);
}
