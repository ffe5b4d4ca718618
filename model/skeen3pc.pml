/*
 * skeen3pc.pml - the NAIVE variant that must FAIL: Skeen's original 3PC
 * termination rule without quorums.
 *
 * Same coordinator, participants, failure model and properties as
 * dtx3pc.pml (which it includes), but with no Paxos recovery leaders.
 * Instead, once C is dead, a participant decides by itself from the
 * participants it can reach (a partition may cut it off from the others):
 *   any reachable participant pre-committed (accepted commit) -> commit,
 *   all reachable participants uncertain                      -> abort.
 * C itself commits, as in Skeen's protocol, only after every participant
 * acknowledged the pre-commit.
 *
 * SPIN finds an agreement violation (see model/README.md and
 * `tools/run-model quick`, check "naive-skeen").
 */
#define NAIVE 1
#include "dtx3pc.pml"
