/*
 * gid.h - names and identifiers: node and shard names, global transaction
 * ids (gtids) and the gids of PostgreSQL prepared transactions.
 *
 *   name  = 1..48 of [A-Za-z0-9_-]
 *   gtid  = <node_id>-<epoch>-<seq>          e.g. "c1-7-1042"
 *   gid   = "dtx:" <gtid> ":" <shard>        e.g. "dtx:c1-7-1042:s2"
 *
 * epoch is the coordinator's boot number (from its decision log) and seq
 * counts transactions within a boot, so gtids never repeat across restarts.
 * Every prepared transaction dtx creates has a gid of this form, and dtx
 * never touches one that does not start with "dtx:".
 */
#ifndef DTX_GID_H
#define DTX_GID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DTX_NAME_MAX 48
#define DTX_GTID_MAX (DTX_NAME_MAX + 44)
#define DTX_GID_MAX  (DTX_GTID_MAX + DTX_NAME_MAX + 8)
/* A database's identity, "<system identifier>:<timeline>" (rm.h), with its NUL. */
#define DTX_DB_ID_MAX  48
#define DTX_GID_PREFIX "dtx:"

/* True when s is a valid node or shard name. */
bool gid_name_ok(const char *s);

/* Writes "<node>-<epoch>-<seq>" into out (DTX_GTID_MAX + 1 bytes). */
void gid_format_gtid(char *out, size_t outsz, const char *node, uint64_t epoch, uint64_t seq);

/*
 * Splits a gtid into its parts. node (DTX_NAME_MAX + 1 bytes), epoch and seq may be NULL.
 * Returns true when gtid is well-formed; on false the outputs are untouched.
 */
bool gid_parse_gtid(const char *gtid, char *node, uint64_t *epoch, uint64_t *seq);

/* Writes "dtx:<gtid>:<shard>" into out (DTX_GID_MAX + 1 bytes). */
void gid_format(char *out, size_t outsz, const char *gtid, const char *shard);

/*
 * Splits a prepared-transaction gid. Returns true when it is a dtx gid with
 * a well-formed gtid and shard name; gtid needs DTX_GTID_MAX + 1 bytes and
 * shard DTX_NAME_MAX + 1 bytes. On false the outputs are untouched.
 */
bool gid_parse(const char *gid, char *gtid, char *shard);

#endif
