/*
 * agent_metrics.c - what the participant tells monitoring: GET /metrics
 * (Prometheus text, prom.h).
 *
 * Counters and histograms of the branch machine (struct branch_metrics,
 * kept by branch.c): votes and how long each prepare took to its vote,
 * one-phase commits and their time, COMMIT PREPARED and ROLLBACK PREPARED
 * and their time. Gauges read when scraped: branches in memory, the
 * database's reachability, recovery's in-doubt count, connected
 * coordinators, and the age of the oldest prepared dtx branch of this
 * shard as recovery last listed them (recovery_oldest_prepared: refreshed
 * every recovery round, so it lags by at most one round, and still ages
 * while the database is down). No label carries a gtid.
 *
 * Thread model: the participant's event-loop thread.
 */
#include "agent_impl.h"

#include "dtx/prom.h"
#include "dtx/version.h"

static void votes(struct prom *p, const struct branch_metrics *m)
{
    static const char *const vote[3] = {"yes", "no", "readonly"};
    static const char *const outcome[3] = {"committed", "aborted", "unknown"};

    prom_family(p, "dtx_agent_votes_total", "counter", "Votes sent, by vote.");
    prom_sample(p, "dtx_agent_votes_total", "vote", "yes", (double)m->votes_yes);
    prom_sample(p, "dtx_agent_votes_total", "vote", "no", (double)m->votes_no);
    prom_sample(p, "dtx_agent_votes_total", "vote", "readonly", (double)m->votes_readonly);
    prom_family(p, "dtx_branch_prepare_seconds", "histogram",
                "Time from a prepare (or an interactive transaction's end) to the vote sent: the "
                "branch's statements and PREPARE TRANSACTION in one pipeline, by vote.");
    for (int i = 0; i < 3; i++) {
        struct prom_label l = {"vote", vote[i]};

        prom_histogram(p, "dtx_branch_prepare_seconds", &l, 1, &m->prepare[i]);
    }
    prom_family(p, "dtx_agent_one_phase_total", "counter", "One-phase commits, by outcome.");
    prom_sample(p, "dtx_agent_one_phase_total", "outcome", "committed",
                (double)m->one_phase_committed);
    prom_sample(p, "dtx_agent_one_phase_total", "outcome", "aborted", (double)m->one_phase_aborted);
    prom_sample(p, "dtx_agent_one_phase_total", "outcome", "unknown", (double)m->one_phase_unknown);
    prom_family(p, "dtx_branch_one_phase_seconds", "histogram",
                "Time from a one-phase commit's request to its outcome sent, by outcome.");
    for (int i = 0; i < 3; i++) {
        struct prom_label l = {"outcome", outcome[i]};

        prom_histogram(p, "dtx_branch_one_phase_seconds", &l, 1, &m->one_phase[i]);
    }
}

static void finishes(struct prom *p, const struct branch_metrics *m)
{
    prom_family(p, "dtx_agent_finished_total", "counter",
                "Prepared branches finished, by outcome.");
    prom_sample(p, "dtx_agent_finished_total", "outcome", "committed", (double)m->committed);
    prom_sample(p, "dtx_agent_finished_total", "outcome", "rolled_back", (double)m->rolled_back);
    prom_family(p, "dtx_branch_commit_prepared_seconds", "histogram",
                "Time from a request to commit a prepared branch to its outcome (COMMIT PREPARED, "
                "retried while the database is down).");
    prom_histogram(p, "dtx_branch_commit_prepared_seconds", NULL, 0, &m->commit_prepared);
    prom_family(p, "dtx_branch_rollback_prepared_seconds", "histogram",
                "Time from a request to roll back a prepared branch to its outcome (ROLLBACK "
                "PREPARED, retried while the database is down).");
    prom_histogram(p, "dtx_branch_rollback_prepared_seconds", NULL, 0, &m->rollback_prepared);
    prom_counter(p, "dtx_agent_heuristic_outcomes_total",
                 "Prepared branches that did not end as the decision said.", (double)m->heuristic);
}

static void gauges(struct prom *p, const struct agent *ag)
{
    struct prom_label info[] = {{"shard", ag->cfg->name}, {"version", DTX_VERSION}};
    char why[8];
    double age;

    prom_family(p, "dtx_agent_info", "gauge", "1, labelled with this agent's shard and version.");
    prom_sample_labels(p, "dtx_agent_info", info, 2, 1);
    prom_family(p, "dtx_agent_branches", "gauge", "Branches in memory, by state.");
    prom_sample(p, "dtx_agent_branches", "state", "running", (double)ag->branches.running);
    prom_sample(p, "dtx_agent_branches", "state", "prepared", (double)ag->branches.prepared);
    prom_gauge(p, "dtx_agent_database_up", "1 while the shard's database is reachable.",
               rm_healthy(ag->rm, why, sizeof(why)));
    prom_gauge(p, "dtx_agent_coordinators", "Coordinators connected to this agent (said hello).",
               (double)peers_connected(ag));
    prom_gauge(p, "dtx_agent_in_doubt",
               "Prepared branches the last recovery round could not settle.",
               (double)recovery_in_doubt(ag->recovery));
    prom_family(p, "dtx_prepared_oldest_age_seconds", "gauge",
                "Age of this shard's oldest prepared dtx branch (0: none), as the last recovery "
                "round listed them (no sample until a listing succeeded).");
    if (recovery_oldest_prepared(ag->recovery, &age))
        prom_sample(p, "dtx_prepared_oldest_age_seconds", "shard", ag->cfg->name, age);
    prom_counter(p, "dtx_agent_recovery_rounds_total", "Recovery rounds run.",
                 (double)recovery_rounds(ag->recovery));
    prom_counter(p, "dtx_agent_recovery_resolved_total", "Branches recovery finished.",
                 (double)recovery_resolved(ag->recovery));
    prom_counter(p, "dtx_agent_acceptor_rows_swept_total",
                 "Three-phase commit acceptor rows left behind that were handed to the "
                 "deletion once their coordinator said the transaction was finished.",
                 (double)recovery_swept(ag->recovery));
}

char *agent_render_metrics(const struct agent *ag)
{
    struct prom p;

    prom_init(&p);
    votes(&p, &ag->branches.m);
    finishes(&p, &ag->branches.m);
    gauges(&p, ag);
    return prom_finish(&p);
}
