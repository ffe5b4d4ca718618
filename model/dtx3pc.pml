/*
 * dtx3pc.pml - SPIN model of dtx's non-blocking commit ("3pc"):
 * single-decree Paxos on the value {commit, abort}, in the style of
 * Paxos Commit (Gray & Lamport) and E3PC (Keidar & Dolev).
 *
 * Read model/README.md first; it says what is modelled, what is abstracted
 * and how to run the checks (tools/run-model).
 *
 * Roles: the coordinator C (acceptor 0) and participants P1..PN
 * (acceptors 1..N).  A majority is MAJ of the N+1 acceptors.
 *
 * The network is a "message soup": every message ever sent stays in a set
 * and may be delivered to any of its addressees any number of times
 * (0, 1, 2, ...) in any order.  That covers loss, duplication, reordering
 * and partitions at once (a partition is a period in which some
 * deliveries just do not happen).  Each receive action is guarded so that
 * it is only enabled when it changes something, so no run loops on
 * useless re-deliveries.
 *
 * A crash resets a process's volatile state and keeps its durable state;
 * the time a process is down is simply a time in which it takes no step.
 * Every action is one d_step: it reads the soup, updates durable state and
 * puts its replies in the soup, which is the order the protocol demands
 * ("written BEFORE the acceptor replies").
 *
 * Compile-time switches (spin -DNAME=VALUE ...):
 *   N=2|3          participants (acceptors are N+1)
 *   MAXC=k         highest ballot counter a recovery leader may use
 *   JUMP=1|2       how far beyond its own promise a new ballot may jump
 *                  (models what a leader learns from NACKs)
 *   MAXCRASH=k     crash+restarts in a run (C and participants together)
 *   COORD_DEATH=0|1  C may crash for good
 *   LEADERS=mask   which acceptors may act as recovery leaders (bit 0 = C)
 *   C_RESTART_ABORT=0|1  a restarted C with no PRECOMMIT record may
 *                  abort directly (presumed abort)
 *   PROGRESS=1     progress configuration: C dies, then a stable period
 *                  ("GST") starts with no more failures (see ltl progress)
 *   LOSS=0|1       (progress configuration) messages may be lost before
 *                  GST; in the safety configurations loss is already
 *                  covered by the soup
 * Variants that must FAIL (each shows a rule of the protocol is needed):
 *   NAIVE              Skeen's 3PC termination rule, no quorums
 *   BUG_SELF_ACCEPT    C pre-commits without checking its own promise
 *   BUG_RESTART_VOTES  a restarted C collects votes again
 *   BUG_FORGET         a participant drops its acceptor state on finishing
 *   BUG_BALLOT_REUSE   a leader keeps its highest counter in memory only
 *   BUG_DUEL           (with PROGRESS) no single leader after GST
 *   BUG_FORGET_EARLY   (with FORGET_AT_END) the shards forget before every
 *                      participant finished
 * Variants expected to stay SAFE:
 *   NO_FENCE           a promise does not fence the branch
 *   FORGET_AT_END      dtx's forget (docs/protocol.md, step 4): once C
 *                      decided itself and every participant finished, C
 *                      writes END and every participant drops its acceptor
 *                      state (C keeps its own); C's COMMIT record is durable
 */

#ifndef N
#define N 2
#endif
#if N != 2 && N != 3
#error "N must be 2 or 3"
#endif
#define A (N + 1)
#define MAJ ((A / 2) + 1)

#ifndef MAXC
#define MAXC 2
#endif
#ifndef JUMP
#define JUMP 1
#endif
#ifndef MAXCRASH
#define MAXCRASH 1
#endif
#ifndef COORD_DEATH
#define COORD_DEATH 1
#endif
#ifndef LEADERS
#define LEADERS ((1 << A) - 1)
#endif
#ifndef C_RESTART_ABORT
#define C_RESTART_ABORT 1
#endif
#ifndef PROGRESS
#define PROGRESS 0
#endif
#ifndef LOSS
#define LOSS 1
#endif

/* ballots: (counter, node) encoded as counter*A + node; b0 = (0, C) = 0.
 * With PROGRESS one more counter (MAXC+1) is kept for the single leader
 * of the stable period. */
#if PROGRESS
#define NCNT (MAXC + 2)
#else
#define NCNT (MAXC + 1)
#endif
#define NBAL (NCNT * A)
#define BAL(c, n) ((c) * A + (n))
#define CNT(b) ((b) / A)

/* values */
#define NONE 0
#define COMMIT 1
#define ABORT 2

/* participant branch states (RUNNING is folded into the PREPARE step:
 * see README, "abstractions") */
#define NOTSTARTED 0
#define PREPARED 2
#define REFUSED 3 /* never prepared, fenced: rolled back */
#define COMMITTED 4
#define ABORTED 5 /* was prepared, rolled back on DECIDE(abort) */

/* coordinator phases (volatile) */
#define CP_INIT 0
#define CP_COLLECT 1   /* PREPARE sent, collecting votes */
#define CP_PRECOMMIT 2 /* accepted (b0, commit); counting ACCEPTED(b0) */
#define CP_DONE 3      /* decided or learned the outcome */
#define CP_RESTARTED 4 /* after a restart without PRECOMMIT record */

#define BIT(x) (1 << (x))
#define ALLP (((1 << A) - 1) & ~1) /* bits of P1..PN */
#define POP(m) (((m)&1) + (((m) >> 1) & 1) + (((m) >> 2) & 1) + (((m) >> 3) & 1))

/* ---------------- state ---------------- */

/* durable acceptor state, index 0 = C */
byte pb[A];       /* promised ballot (all start at b0 = 0) */
byte ab[A];       /* accepted ballot (meaningful when av != NONE) */
byte av[A];       /* accepted value */
byte br[A];       /* branch state of Pi (index 0 unused); REFUSED = fenced */
bit cprecommit;   /* C's durable PRECOMMIT record */
#ifdef FORGET_AT_END
bit ccommit;      /* C's durable COMMIT record: after a restart C knows the outcome */
bit cown;         /* C decided the outcome itself (not learned from a leader) */
bit cend;         /* C's END: every participant finished; the shards forgot */
#endif

/* C's volatile state */
byte cphase;
bit cdead;        /* C crashed for good */

/* recovery leaders (volatile), index = node */
byte lb[A];       /* current ballot */
byte lph[A];      /* 0 idle, 1 phase 1 (promises), 2 phase 2 (accepts), 3 decided */

/* the message soup */
bit m_prepare;              /* PREPARE from C (to every Pi) */
byte m_vote_yes;            /* VOTE(yes) from Pi: bit i */
byte m_accept[NBAL];        /* ACCEPT(b, v): m_accept[b] = v */
byte m_accepted[NBAL];      /* ACCEPTED(b) from acceptor x: bit x */
bit m_promreq[NBAL];        /* PROMISE-REQ(b) */
byte m_promise[NBAL * A];   /* PROMISE(b, ab, av) from x: 1 + ab*3 + av */
byte m_decide;              /* DECIDE(commit) bit 0, DECIDE(abort) bit 1 */

/* bounds, ghosts */
byte ncrash;
byte creport;     /* ghost: what C told the client (COMMIT/ABORT bits) */
byte g_chosen;    /* ghost: values chosen by a majority at one ballot */
byte g_cb;        /* ghost: the ballot at which a value was first chosen */
bit g_p2bad;      /* ghost: a ballot above g_cb proposed another value, or
                   * one ballot carried two values */
bit g_badcommit;  /* ghost: DECIDE(commit) reached an unprepared branch */
bit gst;          /* PROGRESS: the stable period has begun */
byte gldr;        /* PROGRESS: the participant that leads after GST */

byte t_i, t_e, t_b, t_v; /* scratch inside d_steps, always 0 between steps */

/* ---------------- properties ---------------- */

#define ISC(i) (br[i] == COMMITTED)
#define ISA(i) (br[i] == ABORTED || br[i] == REFUSED)
#define ISPC(i) (br[i] == PREPARED || br[i] == COMMITTED)
#define ISFIN(i) (br[i] == COMMITTED || br[i] == ABORTED || br[i] == REFUSED)
#if N == 2
#define ANYP(E) (E(1) || E(2))
#define ALLPP(E) (E(1) && E(2))
#else
#define ANYP(E) (E(1) || E(2) || E(3))
#define ALLPP(E) (E(1) && E(2) && E(3))
#endif

#define SOME_COMMIT (ANYP(ISC) || (creport & COMMIT) != 0)
#define SOME_ABORT (ANYP(ISA) || (creport & ABORT) != 0)

/* Agreement: no participant commits while another aborts (or refused),
 * and C never reports an outcome that some participant contradicts. */
#define AGREEMENT (!(SOME_COMMIT && SOME_ABORT))
/* Validity: commit (decided, chosen or applied anywhere) only if every
 * participant prepared and voted yes. */
#define VALIDITY (!(SOME_COMMIT || (m_decide & COMMIT) != 0 || (g_chosen & COMMIT) != 0) || m_vote_yes == ALLP)
/* Paxos invariant: at most one value is ever chosen (accepted by a
 * majority at one ballot); also, once v is chosen at ballot b, every
 * ballot above b proposes v, and no ballot carries two values. */
#ifdef FORGET_AT_END
/* After END the acceptors' state is gone and every branch is final: a late
 * PROMISE-REQ or ACCEPT re-delivered from the soup only writes state that no
 * leader reads (every round has stopped), so "chosen" is no longer tracked;
 * what may never change is checked by the other invariants. */
#define ONE_CHOSEN (cend || (g_chosen != (COMMIT | ABORT) && !g_p2bad))
#else
#define ONE_CHOSEN (g_chosen != (COMMIT | ABORT) && !g_p2bad)
#endif
/* Never both DECIDE(commit) and DECIDE(abort) sent (this includes C's
 * direct abort, which is not a Paxos choice). */
#define ONE_DECISION (m_decide != (COMMIT | ABORT))
/* DECIDE(commit) only ever meets prepared (or committed) branches; it is
 * also asserted where a participant receives DECIDE(commit). */
#define COMMIT_PREPARED (!g_badcommit && ((m_decide & COMMIT) == 0 || ALLPP(ISPC)))

#if !PROGRESS
/* The safety invariants, checked in every reachable state: this process
 * can only move in a state that violates one of them. */
active proctype Invariants()
{
end:
	atomic {
		!(AGREEMENT && VALIDITY && ONE_CHOSEN && ONE_DECISION && COMMIT_PREPARED) ->
		assert(AGREEMENT);
		assert(VALIDITY);
		assert(ONE_CHOSEN);
		assert(ONE_DECISION);
		assert(COMMIT_PREPARED)
	}
}
#else
/* Progress: once C is dead and the stable period has begun (majority
 * connected, no more failures), every participant finishes. */
ltl progress { [] (gst -> <> ALLPP(ISFIN)) }
#endif

/* ---------------- helpers ---------------- */

#define DOWN(x) ((x) == 0 && cdead)
/* trail output (replayed with spin -T): "C: " for the coordinator, "Pi: "
 * for a participant; values by name */
#define WHO(x) if :: (x) == 0 -> printf("C: ") :: else -> printf("P%d: ", x) fi
/* print the members of an acceptor set (bit 0 = C) */
inline say_set(S)
{
	printf("{");
	t_i = 0;
	do
	:: t_i < A ->
		if
		:: ((S) & BIT(t_i)) != 0 && t_i == 0 -> printf(" C")
		:: ((S) & BIT(t_i)) != 0 && t_i != 0 -> printf(" P%d", t_i)
		:: else -> skip
		fi;
		t_i++
	:: else -> break
	od;
	t_i = 0;
	printf(" }")
}
#define PVAL(v) if :: (v) == COMMIT -> printf("commit") :: (v) == ABORT -> printf("abort") :: else -> printf("none") fi
#define ENC(x) (av[x] == NONE -> 1 : 1 + ab[x] * 3 + av[x])

#ifdef NO_FENCE
#define FENCE(x) skip
#else
#define FENCE(x) \
	if \
	:: (x) != 0 && br[x] == NOTSTARTED -> br[x] = REFUSED; printf("P%d: fenced (branch refused)\n", x) \
	:: else -> skip \
	fi
#endif

#ifdef BUG_FORGET
#define FORGET(x) pb[x] = 0; ab[x] = 0; av[x] = NONE
#else
#define FORGET(x) skip
#endif

#define NOTE_CHOSEN(K) \
	if \
	:: POP(m_accepted[K]) >= MAJ -> \
		if \
		:: g_chosen == NONE || (K) < g_cb -> g_cb = K \
		:: else -> skip \
		fi; \
		g_chosen = g_chosen | m_accept[K] \
	:: else -> skip \
	fi

/* an acceptor that has not finished its own part may start a recovery */
#define UNFINISHED(x) ((x) == 0 -> (cphase == CP_PRECOMMIT || cphase == CP_RESTARTED) : (br[x] == NOTSTARTED || br[x] == PREPARED))
#define L_ELIG(x) ((LEADERS & BIT(x)) != 0 && (lph[x] == 1 || lph[x] == 2 || (lph[x] == 0 && UNFINISHED(x))))

/* ---------------- acceptor actions ---------------- */

/* ACCEPT(K, v) reaches acceptor x: accept if K >= pb, else NACK (implicit). */
#define ACC_RECV(x, K) \
	:: d_step { (K) < NBAL && !DOWN(x) && m_accept[K] != NONE && (K) >= pb[x] && (m_accepted[K] & BIT(x)) == 0 -> \
		pb[x] = K; ab[x] = K; av[x] = m_accept[K]; \
		m_accepted[K] = m_accepted[K] | BIT(x); NOTE_CHOSEN(K); \
		WHO(x); printf("accepts ACCEPT(ballot %d, ", K); PVAL(av[x]); printf(")\n") }

/* PROMISE-REQ(K) reaches acceptor x: promise if K > pb (fence), else NACK. */
#define PRQ_RECV(x, K) \
	:: d_step { (K) < NBAL && !DOWN(x) && m_promreq[K] && (K) > pb[x] -> \
		pb[x] = K; FENCE(x); m_promise[(K) * A + (x)] = ENC(x); \
		WHO(x); printf("promises ballot %d, reports accepted (%d, ", K, ab[x]); PVAL(av[x]); printf(")\n") }

#define ACC_G0(x) ACC_RECV(x, 0) ACC_RECV(x, 3) ACC_RECV(x, 4) ACC_RECV(x, 5) \
	ACC_RECV(x, 6) ACC_RECV(x, 7) ACC_RECV(x, 8)
#define PRQ_G0(x) PRQ_RECV(x, 3) PRQ_RECV(x, 4) PRQ_RECV(x, 5) \
	PRQ_RECV(x, 6) PRQ_RECV(x, 7) PRQ_RECV(x, 8)
#if NBAL > 9
#define ACC_G1(x) ACC_RECV(x, 9) ACC_RECV(x, 10) ACC_RECV(x, 11)
#define PRQ_G1(x) PRQ_RECV(x, 9) PRQ_RECV(x, 10) PRQ_RECV(x, 11)
#else
#define ACC_G1(x)
#define PRQ_G1(x)
#endif
#if NBAL > 12
#define ACC_G2(x) ACC_RECV(x, 12) ACC_RECV(x, 13) ACC_RECV(x, 14) ACC_RECV(x, 15)
#define PRQ_G2(x) PRQ_RECV(x, 12) PRQ_RECV(x, 13) PRQ_RECV(x, 14) PRQ_RECV(x, 15)
#else
#define ACC_G2(x)
#define PRQ_G2(x)
#endif
#if NBAL > 16
#define ACC_G3(x) ACC_RECV(x, 16) ACC_RECV(x, 17) ACC_RECV(x, 18) ACC_RECV(x, 19)
#define PRQ_G3(x) PRQ_RECV(x, 16) PRQ_RECV(x, 17) PRQ_RECV(x, 18) PRQ_RECV(x, 19)
#else
#define ACC_G3(x)
#define PRQ_G3(x)
#endif
#if NBAL > 20
#define ACC_G4(x) ACC_RECV(x, 20) ACC_RECV(x, 21) ACC_RECV(x, 22) ACC_RECV(x, 23)
#define PRQ_G4(x) PRQ_RECV(x, 20) PRQ_RECV(x, 21) PRQ_RECV(x, 22) PRQ_RECV(x, 23)
#else
#define ACC_G4(x)
#define PRQ_G4(x)
#endif
#if NBAL > 24
#error "too many ballots: add ACC_G5/PRQ_G5"
#endif
#define ACCEPTOR(x) ACC_G0(x) ACC_G1(x) ACC_G2(x) ACC_G3(x) ACC_G4(x) \
	PRQ_G0(x) PRQ_G1(x) PRQ_G2(x) PRQ_G3(x) PRQ_G4(x)

/* ---------------- recovery leader ---------------- */

#ifndef BUG_BALLOT_REUSE
/* Start a round with counter c: promise itself durably (and fence itself)
 * BEFORE sending PROMISE-REQ, so a restart never reuses the ballot. */
#define NEXTC(x) CNT(pb[x])
inline start_round(x, c)
{
	lb[x] = BAL(c, x); lph[x] = 1;
	pb[x] = lb[x]; FENCE(x);
	m_promreq[lb[x]] = 1;
	m_promise[lb[x] * A + x] = ENC(x);
	WHO(x); printf("leads ballot %d = (%d, node %d): PROMISE-REQ\n", lb[x], CNT(lb[x]), x)
}
#else
/* BUG: "the highest counter it has seen" is kept in memory only, and the
 * leader's own acceptor gets PROMISE-REQ and ACCEPT like any other (no
 * durable self-promise, no self-accept before sending): after a restart
 * the leader may pick the same ballot again. */
#define NEXTC(x) (CNT(pb[x]) + (CNT(lb[x]) > CNT(pb[x])) * (CNT(lb[x]) - CNT(pb[x])))
inline start_round(x, c)
{
	lb[x] = BAL(c, x); lph[x] = 1;
	m_promreq[lb[x]] = 1;
	WHO(x); printf("leads ballot %d = (%d, node %d): PROMISE-REQ\n", lb[x], CNT(lb[x]), x)
}
#endif

#if PROGRESS && !defined(BUG_DUEL)
#define PRE_GST (!gst)
#else
#define PRE_GST 1
#endif

#define L_START(x, k) \
	:: d_step { PRE_GST && !DOWN(x) && L_ELIG(x) && NEXTC(x) + (k) <= MAXC -> \
		start_round(x, NEXTC(x) + (k)) }
#if JUMP >= 2
#define L_START2(x) L_START(x, 2)
#else
#define L_START2(x)
#endif

#if PROGRESS && !defined(BUG_DUEL)
/* after GST only the participant gldr starts a round, with the top counter */
#define L_FINAL(x) \
	:: d_step { gst && (x) == gldr && lb[x] < BAL(MAXC + 1, 0) -> start_round(x, MAXC + 1) }
#else
#define L_FINAL(x)
#endif

#ifdef BUG_BALLOT_REUSE
#define SELF_ACCEPT 0
#else
#define SELF_ACCEPT 1
#endif
#define HASP(b, x) (m_promise[(b) * A + (x)] != 0)
#define PROMISED(b, Q) ((((Q) & 1) == 0 || HASP(b, 0)) && (((Q) & 2) == 0 || HASP(b, 1)) && \
	(((Q) & 4) == 0 || HASP(b, 2)) && (((Q) & 8) == 0 || HASP(b, 3)))

/* value to propose from the promises of quorum Q at ballot b: the value of
 * the highest accepted ballot among them, else abort (left in t_v) */
inline pick(b, Q)
{
	t_v = NONE; t_b = 0; t_i = 0;
	do
	:: t_i < A ->
		if
		:: (Q & BIT(t_i)) != 0 && m_promise[b * A + t_i] > 1 ->
			t_e = m_promise[b * A + t_i] - 1;
			if
			:: t_v == NONE || t_e / 3 > t_b -> t_b = t_e / 3; t_v = t_e % 3
			:: else -> skip
			fi
		:: else -> skip
		fi;
		t_i++
	:: else -> break
	od;
	if
	:: t_v == NONE -> t_v = ABORT
	:: else -> skip
	fi;
	t_i = 0; t_e = 0; t_b = 0
}

/* Phase 2 with the promises of quorum Q (any majority whose promises have
 * arrived). The leader accepts itself first (durably) if its own promise
 * allows, then sends ACCEPT(b, v) to every acceptor. */
#define L_P2(x, Q) \
	:: d_step { !DOWN(x) && lph[x] == 1 && PROMISED(lb[x], Q) -> \
		pick(lb[x], Q); \
		if \
		:: (m_accept[lb[x]] != NONE && m_accept[lb[x]] != t_v) || \
		   (g_chosen != NONE && lb[x] > g_cb && t_v != g_chosen) -> g_p2bad = 1 \
		:: else -> skip \
		fi; \
		lph[x] = 2; \
		if \
		:: SELF_ACCEPT && lb[x] >= pb[x] -> pb[x] = lb[x]; ab[x] = lb[x]; av[x] = t_v; \
			m_accepted[lb[x]] = m_accepted[lb[x]] | BIT(x) \
		:: else -> skip \
		fi; \
		m_accept[lb[x]] = t_v; NOTE_CHOSEN(lb[x]); \
		WHO(x); printf("ballot %d: promises from ", lb[x]); say_set(Q); printf(", sends ACCEPT(%d, ", lb[x]); PVAL(t_v); printf(")\n"); \
		t_v = 0 }

#if N == 2
#define L_P2ALL(x) L_P2(x, 3) L_P2(x, 5) L_P2(x, 6)
#else
#define L_P2ALL(x) L_P2(x, 7) L_P2(x, 11) L_P2(x, 13) L_P2(x, 14)
#endif

/* ACCEPTED(b) from a majority: the value is chosen; DECIDE it to all. */
#define L_DEC(x) \
	:: d_step { !DOWN(x) && lph[x] == 2 && POP(m_accepted[lb[x]]) >= MAJ -> \
		m_decide = m_decide | m_accept[lb[x]]; lph[x] = 3; \
		WHO(x); printf("ballot %d accepted by a majority: DECIDE(", lb[x]); PVAL(m_accept[lb[x]]); printf(")\n") }

#ifdef NAIVE
#define LEADER(x)
#else
#define LEADER(x) L_START(x, 1) L_START2(x) L_FINAL(x) L_P2ALL(x) L_DEC(x)
#endif

/* ---------------- Skeen's naive termination rule (NAIVE) ---------------- */
#ifdef NAIVE
/* After C is dead, Pi decides alone from the participants R it can reach
 * (R contains i; the others are cut off by a partition): any of them
 * pre-committed (accepted commit) or committed -> commit; else abort. */
#define PC_IN(R, j) (((R) & BIT(j)) != 0 && (av[j] == COMMIT || br[j] == COMMITTED))
#if N == 2
#define ANY_PC_IN(R) (PC_IN(R, 1) || PC_IN(R, 2))
#else
#define ANY_PC_IN(R) (PC_IN(R, 1) || PC_IN(R, 2) || PC_IN(R, 3))
#endif
#define NV_TERM(i, R) \
	:: d_step { cdead && (R & BIT(i)) != 0 && (br[i] == NOTSTARTED || br[i] == PREPARED) -> \
		if \
		:: ANY_PC_IN(R) -> \
			assert(br[i] == PREPARED); br[i] = COMMITTED; m_decide = m_decide | COMMIT; \
			printf("P%d: C is dead; can reach only ", i); say_set(R); printf(", one is pre-committed: COMMIT\n") \
		:: else -> \
			br[i] = (br[i] == PREPARED -> ABORTED : REFUSED); m_decide = m_decide | ABORT; \
			printf("P%d: C is dead; can reach only ", i); say_set(R); printf(", all uncertain: ABORT\n") \
		fi }
#if N == 2
#define NAIVE_TERM(i) NV_TERM(i, 2) NV_TERM(i, 4) NV_TERM(i, 6)
#else
#define NAIVE_TERM(i) NV_TERM(i, 2) NV_TERM(i, 4) NV_TERM(i, 8) NV_TERM(i, 6) \
	NV_TERM(i, 10) NV_TERM(i, 12) NV_TERM(i, 14)
#endif
/* Skeen: C commits after every participant acknowledged the pre-commit */
#define C_LEARN_QUORUM (POP(m_accepted[0]) == A)
#else
#define NAIVE_TERM(i)
#define C_LEARN_QUORUM (POP(m_accepted[0]) >= MAJ)
#endif

/* ---------------- the coordinator ---------------- */

#ifdef BUG_SELF_ACCEPT
#define C_SELF_OK 1
#else
#define C_SELF_OK (pb[0] == 0) /* its own promise still allows b0 */
#endif

#ifdef BUG_RESTART_VOTES
#define C_RESTART_PHASE CP_COLLECT
#else
#define C_RESTART_PHASE CP_RESTARTED
#endif

#if PROGRESS
#define NOFAIL (!gst)
#else
#define NOFAIL 1
#endif

#ifdef FORGET_AT_END
#define OWN_DECISION cown = 1
#define COMMIT_RECORD ccommit = 1
/* a restarted C that holds its COMMIT record knows the outcome: phase 2 only */
#define RESTART_FROM_COMMIT cown = ccommit; if :: ccommit -> cphase = CP_DONE :: else -> skip fi
#ifdef BUG_FORGET_EARLY
#define ALL_FINISHED 1
#else
#define ALL_FINISHED ALLPP(ISFIN)
#endif
/* every participant finished (in dtx: acknowledged C's decision), so C
 * writes END and each shard deletes its acceptor row.  A participant's
 * recovery round stops when its branch finishes (terminate.c); the model
 * lets it run until here, which only allows more. */
#define FORGET_ONE(x) pb[x] = 0; ab[x] = 0; av[x] = NONE; lph[x] = 0; lb[x] = 0
#if N == 2
#define FORGET_ALL FORGET_ONE(1); FORGET_ONE(2)
#else
#define FORGET_ALL FORGET_ONE(1); FORGET_ONE(2); FORGET_ONE(3)
#endif
#define FORGET_STEP \
	:: d_step { !cdead && !cend && cphase == CP_DONE && cown && lph[0] == 0 && ALL_FINISHED -> \
		cend = 1; FORGET_ALL; printf("C: END: every shard forgets its acceptor state\n") }
#else
#define OWN_DECISION skip
#define COMMIT_RECORD skip
#define RESTART_FROM_COMMIT skip
#define FORGET_STEP
#endif

active proctype Coord()
{
end:
	do
	/* 1. PREPARE to every participant */
	:: d_step { !cdead && cphase == CP_INIT ->
		m_prepare = 1; cphase = CP_COLLECT; printf("C: PREPARE sent\n") }

	/* 3. all votes yes: accept (b0, commit) itself durably (PRECOMMIT),
	 *    then ACCEPT(b0, commit) to every Pi */
	:: d_step { !cdead && cphase == CP_COLLECT && m_vote_yes == ALLP && C_SELF_OK ->
		ab[0] = 0; av[0] = COMMIT; cprecommit = 1; cphase = CP_PRECOMMIT;
		m_accepted[0] = m_accepted[0] | 1; m_accept[0] = COMMIT; NOTE_CHOSEN(0);
		printf("C: all yes; PRECOMMIT written, ACCEPT(b0, commit) sent\n") }

	/* 2. a vote no or a timeout while collecting: abort directly.
	 *    (A restarted C without PRECOMMIT record may too: presumed abort.) */
	:: d_step { !cdead && (cphase == CP_COLLECT || (C_RESTART_ABORT && cphase == CP_RESTARTED && !cprecommit)) ->
		cphase = CP_DONE; m_decide = m_decide | ABORT; creport = creport | ABORT; OWN_DECISION;
		printf("C: vote no / timeout: DECIDE(abort), client told aborted\n") }

	/* 5. ACCEPTED(b0) from a majority (C counts itself): commit is chosen */
	:: d_step { !cdead && cphase == CP_PRECOMMIT && C_LEARN_QUORUM ->
		cphase = CP_DONE; m_decide = m_decide | COMMIT; creport = creport | COMMIT; OWN_DECISION; COMMIT_RECORD;
		printf("C: majority accepted b0: DECIDE(commit), client told committed\n") }

	/* C learns a decision made by a recovery leader */
	:: d_step { !cdead && (m_decide & ~creport) != 0 ->
		creport = creport | m_decide; cphase = CP_DONE;
		printf("C: learns DECIDE("); PVAL(m_decide); printf("), tells the client\n") }

	/* C as acceptor and as recovery leader */
	ACCEPTOR(0)
	LEADER(0)

	FORGET_STEP

	/* crash and restart: only durable state survives */
	:: d_step { NOFAIL && !cdead && ncrash < MAXCRASH ->
		ncrash++;
		cphase = (cprecommit -> CP_PRECOMMIT : C_RESTART_PHASE);
		lph[0] = 0; lb[0] = 0; RESTART_FROM_COMMIT;
		printf("C: crash and restart (precommit record %d)\n", cprecommit) }

	/* crash for good */
	:: d_step { COORD_DEATH && !cdead ->
		cdead = 1; lph[0] = 0; lb[0] = 0; printf("C: dies for good\n") }
	od
}

/* ---------------- the participants ---------------- */

proctype Part(byte me)
{
end:
	do
	/* PREPARE: run the ops and PREPARE TRANSACTION (vote yes), or fail
	 * (vote no, which C may treat like a timeout).  A fenced branch
	 * (REFUSED) never prepares. */
	:: d_step { m_prepare && br[me] == NOTSTARTED ->
		br[me] = PREPARED; m_vote_yes = m_vote_yes | BIT(me);
		printf("P%d: prepared, VOTE(yes)\n", me) }
	:: d_step { m_prepare && br[me] == NOTSTARTED ->
		br[me] = REFUSED; printf("P%d: refuses, VOTE(no)\n", me) }

	/* DECIDE(commit): commit the prepared branch.  Reaching a branch that
	 * never prepared would break validity: asserted here.  (A branch that
	 * has already rolled back ignores it; the agreement check flags that.) */
	:: d_step { (m_decide & COMMIT) != 0 && (br[me] == PREPARED || br[me] == NOTSTARTED || br[me] == REFUSED) && !g_badcommit ->
		if
		:: br[me] == PREPARED -> br[me] = COMMITTED; FORGET(me);
			printf("P%d: DECIDE(commit): COMMIT PREPARED\n", me)
		:: else -> g_badcommit = 1;
			printf("P%d: DECIDE(commit) but the branch never prepared!\n", me);
			assert(br[me] == PREPARED)
		fi }

	/* DECIDE(abort): roll back a prepared branch; refuse one not prepared */
	:: d_step { (m_decide & ABORT) != 0 && (br[me] == NOTSTARTED || br[me] == PREPARED) ->
		br[me] = (br[me] == PREPARED -> ABORTED : REFUSED); FORGET(me);
		printf("P%d: DECIDE(abort): rolled back\n", me) }

	ACCEPTOR(me)
	LEADER(me)
	NAIVE_TERM(me)

	/* crash and restart: a participant's volatile state is its leader state
	 * (branch and acceptor state are durable) */
	:: d_step { NOFAIL && ncrash < MAXCRASH && lph[me] != 0 ->
		ncrash++; lph[me] = 0; lb[me] = 0;
		printf("P%d: crash and restart\n", me) }
	od
}

/* ---------------- environment (PROGRESS only) ---------------- */

#if PROGRESS
active proctype Env()
{
end:
	do
	/* the stable period begins: C is dead, the participants (a majority of
	 * acceptors once C is gone, for N = 2 and 3 that is all of them) are
	 * connected; one unfinished participant is the single leader from now on */
	:: d_step { !gst && cdead && !ALLPP(ISFIN) && !ISFIN(1) -> gst = 1; gldr = 1; printf("GST, leader P1\n") }
	:: d_step { !gst && cdead && !ALLPP(ISFIN) && !ISFIN(2) -> gst = 1; gldr = 2; printf("GST, leader P2\n") }
#if N == 3
	:: d_step { !gst && cdead && !ALLPP(ISFIN) && !ISFIN(3) -> gst = 1; gldr = 3; printf("GST, leader P3\n") }
#endif
	:: d_step { !gst && cdead && ALLPP(ISFIN) -> gst = 1; printf("GST, all finished\n") }
#if LOSS
	/* before GST messages may be lost (those still in the soup at GST are
	 * delivered later, as after a partition heals) */
	:: d_step { !gst && (m_decide & COMMIT) != 0 -> m_decide = m_decide & ~COMMIT; printf("lost: DECIDE(commit)\n") }
	:: d_step { !gst && (m_decide & ABORT) != 0 -> m_decide = m_decide & ~ABORT; printf("lost: DECIDE(abort)\n") }
	:: d_step { !gst && m_prepare -> m_prepare = 0; printf("lost: PREPARE\n") }
#endif
	od
}
#endif

init
{
	atomic {
		run Part(1);
		run Part(2);
#if N == 3
		run Part(3);
#endif
	}
}
