/*
 * status.h - the words dtx shows to clients, operators and participants:
 * a transaction's status (the contract's "status" field) and a decision
 * (what a participant holding a prepared branch must do with it).
 *
 * One table each, shared by the coordinator, the participant and dtxctl:
 * code compares the enums, never the strings.
 */
#ifndef DTX_STATUS_H
#define DTX_STATUS_H

#include <stdbool.h>
#include <stddef.h>

/* A transaction's status, as GET /v1/transactions/{gtid} shows it. */
enum dtx_status {
    DTX_ST_ACTIVE,       /* interactive: open, taking calls */
    DTX_ST_PREPARING,    /* phase 1, or the commit decision is being recorded */
    DTX_ST_PRECOMMITTED, /* 3PC: the pre-commit is being accepted (not produced yet) */
    DTX_ST_COMMITTING,   /* commit decided and durable; phase 2 under way */
    DTX_ST_COMMITTED,
    DTX_ST_ABORTING, /* abort decided; rollbacks under way */
    DTX_ST_ABORTED,
    DTX_ST_UNKNOWN, /* the outcome cannot be known (one phase, shard lost while committing) */
    DTX_NSTATUS
};

/* "active", "preparing", ...; "?" for a value out of range. */
const char *dtx_status_name(enum dtx_status s);
/* The status called name, or -1 when there is none. */
int dtx_status_parse(const char *name);
/* Writes every status name, comma separated, into buf (for messages: "active, preparing, ..."). */
void dtx_status_list(char *buf, size_t n);

/*
 * What is decided about a transaction, as far as one coordinator knows.
 * Travels to participants as "commit", "abort", "in_flight", "unknown".
 */
enum dtx_decision {
    DTX_DEC_IN_FLIGHT, /* still being decided (or an operator's decision is being recorded) */
    DTX_DEC_COMMIT,
    DTX_DEC_ABORT,
    DTX_DEC_UNKNOWN, /* not this coordinator's to decide, or beyond what it can know */
    DTX_NDECISIONS
};

const char *dtx_decision_name(enum dtx_decision d);
/* The decision called name, or -1 when there is none. */
int dtx_decision_parse(const char *name);

#endif
