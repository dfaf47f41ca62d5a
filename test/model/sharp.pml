/*
 * sharp.pml - a checked model of the SHarP zero-buffer handover.
 *
 * One flow, one direction (one rule on one switch, one agent side: the two
 * directions of a real handover use separate rules, counters, sides and rings
 * and are two independent copies of this model), moved from VNF instance A to
 * instance B by the controller's engine (src/handover/engine.ts), through the
 * agent program (ebpf/agent.bpf.c) on each instance.
 *
 *   Sender --wire--> Switch --link[A]--> Agent(A) -> VNF A --\
 *                          \-link[B]--> Agent(B) -> VNF B ---+--out--> Sink
 *                                       (hold ring, replay)
 *
 * Processes: Sender (frames 1..N), Switch (rule action: port A/B, phase
 * NONE/PRE/POST, handover id; counts the PRE frames it sends), Agent(A),
 * Agent(B) (strip, count PRE, hold in a bounded ring, pass), Sink (checks the
 * sequence numbers), Engine (the controller: the handover, its rollbacks and
 * the reconciliation after a restart) and Checker (the end state).
 *
 * Links are FIFO channels; frames are in flight on them (and inside the
 * switch) while the engine changes the rule. The engine's quiescence waits
 * (HandoverRun.quiesce) end by an exact event, QEVENT: the switch barrier (no
 * run that read an older action is still inside the switch), the frames the
 * switch had sent to the instance by then, the instance's agent having taken
 * in as many, and the agent barrier (each of those has finished its agent run
 * and VNF). Where the event does not come within Q, or the data plane has
 * none, the wait is timed: modelled as the explicit assumption it stands for,
 * written next to it as "ASSUMPTION Q...": the engine waits until the
 * condition holds (a guard on the frames in flight), which is what Q >> one
 * pass of a frame through switch, link and agent buys in the real system.
 * QUIESCE(X, cond) lets spin take either way at every wait.
 *
 * Properties (assertions; spin also reports any invalid end state, i.e. a
 * process stuck before its end):
 *   P1  the sink receives frames 1..N exactly once each, in order
 *       (no loss, no reordering, no duplication);
 *   P2  the old instance's state is final before the move: when the
 *       moving-state step begins, A's VNF has processed every frame the
 *       switch routed to A, and it processes none afterwards unless the
 *       handover is rolled back after switch-over (the flow comes back to A);
 *   P3  VNF state is continuous: every frame a VNF processes finds that
 *       VNF's state for the flow present and equal to the frame's sequence
 *       number - 1 (the stamp check of the end-to-end tests);
 *   P4  every handover ends (completed or aborted) with nothing left armed
 *       at either agent and the rule unmarked, pointing at B if completed
 *       and at A if aborted.
 *
 * Bounds (cpp macros, spin -D...): N frames, RING slots in B's hold ring,
 * MAX_FAILS errors (a step throws: the engine rolls back), MAX_RESTARTS
 * controller restarts (volatile state lost, reconcile from the data plane).
 *
 * Mutations (each removes one guard; the model must then report an error;
 * the engine's waits are guards of the timed model, TIMED_ONLY: with the
 * event any one of them leaves A final):
 *   BUG_PASS_BEFORE_FLUSH  agent: a new frame passes once the ring is empty,
 *                          without waiting until the replayed frames flushed
 *   BUG_NO_DRAIN_WAIT      engine: moves state without waiting for the PRE count
 *   BUG_NO_VNF_WAIT        engine: no Q after the PRE count (A's VNF may still run)
 *   BUG_NO_SWITCH_WAIT     engine: reads pre_sent right after the switch-over
 *   BUG_NO_PREMARK_WAIT    engine: switches over right after pre-marking
 *   BUG_NO_SWITCH_BARRIER  the event without its switch barrier (counts read
 *                          while a frame that read the old action is inside)
 *   BUG_NO_AGENT_BARRIER   the event without its agent barrier (A's VNF may
 *                          still be processing a frame its agent took in)
 *   TIMED_ONLY             every wait timed (a data plane without the event)
 *   SINK_ONLY              keep only P1 and P4 (shows what the sink alone sees)
 *
 * Late failure points (the engine survives them; enabled on their own runs):
 *   FAIL_LATE              also let the releasing and cleaning steps fail
 *                          (as dp.release / setRuleAction / disarm can): once
 *                          the release began the engine retries forward
 *                          (HandoverRun.committed), never back to A
 *   FAIL_SWITCH_WRITE      the switch-over write takes effect but setAll
 *                          reports a failure: switchedOver is set before the
 *                          writes, so the rollback empties B back to A
 */

#ifndef N
#define N 3
#endif
#ifndef RING
#define RING N
#endif
#ifndef MAX_FAILS
#define MAX_FAILS 1
#endif
#ifndef MAX_RESTARTS
#define MAX_RESTARTS 1
#endif

/* instances */
#define A 0
#define B 1
/* phases (enum sharp_phase) */
#define NONE 0
#define PRE  1
#define POST 2
/* handover ids: H moves the flow A -> B; BACK takes it back (rollback after
 * switch-over); RELAYED tags frames B relays to A (they carry no shim: the
 * tag exists only to count them in flight) */
#define NOHID   0
#define H       1
#define BACK    2
#define RELAYED 3
/* agent roles (SHARP_AGENT_OLD / _NEW); NO = hid not armed */
#define NO  0
#define OLD 1
#define NEW 2

/* The engine's steps: exactly the HandoverStep values the engine enters on
 * the SHarP path (test/model/model.test.ts compares the two). */
mtype:step = { arming, pre_marking, switching, draining, moving_state, releasing, cleaning, completed, rolling_back, aborted };
mtype:step step;

/* ---------------------------------------------------------------- the data plane */

/* the switch's rule action (one atomic map write changes all three) */
byte actPort = A;
byte actPhase = NONE;
byte actHid = NOHID;
/* the switch's PRE counter for H (ho_stats.pre_packets) */
byte swPre;

chan wire = [1] of { byte };				/* sender -> switch */
chan link[2] = [N] of { byte, byte, byte };		/* switch -> agent: seq, phase, hid */
chan out = [N] of { byte };				/* VNFs -> sink */
chan batch = [RING] of { byte };			/* a replay test run's frames before its flush */

/* agents: role[me*3 + hid]; one hold ring per instance (B's for H, A's for BACK) */
byte role[6];
byte preSeen[2];			/* PRE frames of H counted on arrival */
byte ring[2 * RING];
byte head[2];
byte tail[2];
bool passing[2];			/* SHARP_HOLD_PASSING */
bool requested[2];			/* release_ctl.requested */
byte flushed[2];			/* release_ctl.flushed_head */
byte overflow;
byte busy[2];				/* frame an agent passed into its VNF, not yet processed */

/* VNF state for the flow: the per-flow counter, and whether the VNF has it */
byte vstate[2];
bool valid[2];

/* ghosts: frames in flight (inside the switch or on a link), by link and phase */
byte infl[6];				/* infl[port*3 + phase] */
bool swPreInside;			/* the switch holds a frame that read a PRE action, not yet counted and sent */
bool swInside;				/* the switch holds a frame (it read an action), not yet sent */
bool swStale;				/* ... and it read the action before the last write (the switch barrier waits for it) */
/* The quiescence event's counts, relative: at the event's snapshot (after
 * the switch barrier) the frames sent to X so far are those on link[X] and
 * inside X's agent; the agent takes them in first (FIFO). pendArr[X]: of
 * those, not yet taken in (port tx - arrivals); pendFin[X]: not yet through
 * the agent and VNF (what the agent barrier waits for). */
byte pendArr[2];
byte pendFin[2];
byte relayInfl;				/* relayed frames in flight to A */
byte sentToA;				/* frames the switch routed to A */
byte procA;				/* frames A's VNF processed */
bool aFrozen;				/* P2: the state move began, A must not process */
byte expect = 1;			/* the sink's next sequence number */
bool engineDone;
byte fails;
byte restarts;

/* ---------------------------------------------------------------- helpers */

/* A VNF processes frame s (the example VNF: counter + stamp). */
inline vnf(me, s) {
#ifndef SINK_ONLY
	if
	:: !valid[me] || s != vstate[me] + 1 ->
		printf("P3: VNF %d processes frame %d with state %d (present: %d)\n", me, s, vstate[me], valid[me])
	:: else -> skip
	fi;
	assert(valid[me] && s == vstate[me] + 1);	/* P3 */
	if
	:: me == A && aFrozen -> printf("P2: A processes frame %d after the state move began\n", s)
	:: else -> skip
	fi;
	assert(!(me == A && aFrozen));			/* P2, second half */
#endif
	vstate[me] = s;
	if
	:: me == A -> procA++
	:: else -> skip
	fi
}

inline setAct(p, ph, h) {
	atomic { actPort = p; actPhase = ph; actHid = h; swStale = swInside }
}

/* agent.armNew: hold frames of hid h in a fresh ring (a no-op if armed) */
inline armNew(me, h) {
	atomic {
		if
		:: role[me * 3 + h] == NO ->
			role[me * 3 + h] = NEW;
			head[me] = 0; tail[me] = 0; passing[me] = false;
			requested[me] = false; flushed[me] = 0
		:: else -> skip
		fi
	}
}

/* ---------------------------------------------------------------- restarts, failures, waits */

/* A controller restart may happen before any data-plane operation (and while
 * the engine waits): its volatile state is lost, the reconciler takes over. */
#define CRASH \
	if \
	:: restarts < MAX_RESTARTS -> restarts++; printf("controller restart in step %e\n", step); goto reconcile \
	:: true -> skip \
	fi

/* ... and any data-plane operation on the forward path may throw: the engine
 * rolls back (catch in handover()). */
#define OP \
	if \
	:: restarts < MAX_RESTARTS -> restarts++; printf("controller restart in step %e\n", step); goto reconcile \
	:: fails < MAX_FAILS -> fails++; printf("step %e fails\n", step); goto rollback \
	:: true -> skip \
	fi

#ifdef FAIL_LATE
/* once the release began a failure is retried forward (engine #goForward):
 * release and clean-up again from the top, which are idempotent */
#define LATE_OP \
	if \
	:: restarts < MAX_RESTARTS -> restarts++; printf("controller restart in step %e\n", step); goto reconcile \
	:: fails < MAX_FAILS -> fails++; printf("step %e fails: retried forward\n", step); goto releasing_resume \
	:: true -> skip \
	fi
/* inside release(): on the forward path (fwd) likewise; a rollback that
 * throws ends the engine's handover as 'failed', which the model leaves out */
#define RELEASE_OP \
	if \
	:: restarts < MAX_RESTARTS -> restarts++; printf("controller restart in step %e\n", step); goto reconcile \
	:: fwd && fails < MAX_FAILS -> fails++; printf("step %e fails: retried forward\n", step); goto releasing_resume \
	:: true -> skip \
	fi
#else
#define LATE_OP CRASH
#define RELEASE_OP CRASH
#endif

/* sleep(Q): the engine goes on once the assumption holds (or restarts meanwhile) */
#define QWAIT(cond) \
	if \
	:: (cond) -> skip \
	:: restarts < MAX_RESTARTS -> restarts++; printf("controller restart in step %e\n", step); goto reconcile \
	fi

/* The exact quiescence event for instance X (HandoverRun.quiesce: the switch
 * barrier, then its port's tx; the agent's arrivals, then its barrier). Each
 * part is a wait the engine may die in. */
#ifdef BUG_NO_SWITCH_BARRIER
#define SWITCH_BARRIER skip
#else
#define SWITCH_BARRIER QWAIT(!swStale)
#endif
#ifdef BUG_NO_AGENT_BARRIER
#define AGENT_BARRIER(X) skip
#else
#define AGENT_BARRIER(X) QWAIT(pendFin[X] == 0)
#endif
#define QEVENT(X) \
	SWITCH_BARRIER; \
	atomic { pendArr[X] = len(link[X]); pendFin[X] = len(link[X]) + (busy[X] != 0) }; \
	QWAIT(pendArr[X] == 0); \
	AGENT_BARRIER(X); \
	atomic { pendArr[X] = 0; pendFin[X] = 0 }

/* A quiescence wait. The model checks the event alone (and that it implies
 * the assumption the timed wait stands for: then a run mixing event-ended
 * and timed waits, as a frame lost on the way makes one, is a run of the
 * timed model); TIMED_ONLY checks the protocol with every wait timed. */
#ifdef TIMED_ONLY
#define QUIESCE(X, cond) QWAIT(cond)
#else
#define QUIESCE(X, cond) \
	QEVENT(X); \
	if \
	:: !(cond) -> printf("QUIESCE: the event ended the wait for %c before its assumption held\n", 'A' + X) \
	:: else -> skip \
	fi; \
	assert(cond)
#endif

/* Witnesses (-DWITNESS=n): scenario n becomes an assertion failure, so spin
 * proves the scenario reachable - the model is not vacuously correct.
 *   1 B holds a frame                2 a new frame passes B after the release
 *   3 B relays a held frame to A     4 A holds a frame under BACK
 *   5 A replays its BACK ring        6 a PRE frame is inside the switch while
 *                                      the rule changes to POST (the race Q2 closes)
 *   7 the reconciler resumes a release with frames still in B's ring
 *   8 the drain has PRE frames to wait for (TIMED_ONLY: after the quiescence
 *     event A has taken in every PRE frame already)
 *   9 a frame reaches B between the replay's last pop and the recorded flush */
#ifdef WITNESS
#define W(n) if :: WITNESS == n -> printf("witness %d\n", n); assert(false) :: else -> skip fi
#else
#define W(n) skip
#endif

#define ENTER(s) step = s; printf("engine: step %e\n", step)

/*
 * dp.release(me, hid[, relayTo A]) as agents.ts runs it: mark the release
 * requested (a new frame that finds the ring empty and flushed passes by
 * itself from now on), then replay what is queued in one test run, record
 * the flush, and repeat; when nothing is queued, agent_release_finish flips
 * the side to passing unless a frame arrived meanwhile.
 * A test run the controller started runs to its end (the kernel finishes the
 * syscall even if the controller dies during it); the flush of its frames is
 * a separate step after the last pop.
 */
inline release(me, relay) {
	atomic { requested[me] = true; flushed[me] = head[me] }
	do
	:: passing[me] -> break
	:: !passing[me] && tail[me] != head[me] ->
		/* agent_replay, repeat = queued, live frames */
		k = tail[me] - head[me];
		do
		:: k > 0 ->
			atomic {
				s = ring[me * RING + head[me] % RING];
				head[me]++;
				if
				:: relay -> W(3)			/* RELAY mode: out of relay_tx, past B's VNF */
				:: else -> vnf(me, s);			/* through the agent into the VNF */
					if
					:: me == A -> W(5)
					:: else -> skip
					fi
				fi;
				batch!s;
				printf("replay at %c: frame %d popped (relay %d)\n", 'A' + me, s, relay);
				k--
			}
		:: else -> break
		od;
		/* the run's flush: its frames leave, in order */
		atomic {
			do
			:: batch?s ->
				printf("replay at %c: frame %d flushed\n", 'A' + me, s);
				if
				:: relay -> relayInfl++; link[A]!s, NONE, RELAYED
				:: else -> out!s
				fi
			:: empty(batch) -> break
			od
		}
		RELEASE_OP;
		/* user space records the flush (release_ctl.flushed_head = head) */
		flushed[me] = head[me];
		RELEASE_OP
	:: !passing[me] && tail[me] == head[me] ->
		/* agent_release_finish: DONE iff still empty, else AGAIN */
		atomic {
			if
			:: tail[me] == head[me] -> passing[me] = true
			:: else -> skip
			fi
		}
	od
}

/* ---------------------------------------------------------------- traffic */

proctype Sender() {
	byte i = 1;
	do
	:: i <= N -> wire!i; i++
	:: else -> break
	od
}

/*
 * The switch program: one snapshot of the rule action per frame, then (a
 * separate step: another CPU may be anywhere in between) the PRE count and
 * the redirect. A frame that read the old action can still be counted and
 * sent after the controller wrote the new one - the race Q closes.
 */
proctype Switch() {
	byte s, p, ph, h;
end_switch:
	do
	:: atomic {
		wire?s;
		p = actPort; ph = actPhase; h = actHid;
		infl[p * 3 + ph]++;
		swPreInside = (ph == PRE);
		swInside = true;
		if
		:: p == A -> sentToA++
		:: else -> skip
		fi
	   };
	   atomic {
		if
		:: ph == PRE -> swPre++
		:: else -> skip
		fi;
		link[p]!s, ph, h;
		printf("switch: frame %d to %c, phase %d, hid %d\n", s, 'A' + p, ph, h);
		swPreInside = false;
		swInside = false;
		swStale = false;
		p = 0; ph = 0; h = 0
	   }
	od
}

/*
 * The agent program on instance `me`: frames of one link in arrival order,
 * one at a time (one receive queue); a frame it passes is inside the VNF
 * (busy) until the VNF has processed and sent it.
 */
proctype Agent(byte me) {
	byte s, ph, h, r;
end_agent:
	do
	:: atomic {
		(busy[me] == 0 && nempty(link[me])) ->
		link[me]?s, ph, h;
		if
		:: pendArr[me] > 0 -> pendArr[me]--
		:: else -> skip
		fi;
		if
		:: h == RELAYED -> relayInfl--
		:: else -> infl[me * 3 + ph]--
		fi;
		if
		:: ph == NONE -> busy[me] = s			/* plain frame: to the VNF */
		:: else ->
			r = role[me * 3 + h];
			if
			:: ph == PRE && r != NO -> preSeen[me]++	/* counted on arrival, before the VNF ran */
			:: else -> skip
			fi;
			if
			:: r != NEW -> busy[me] = s		/* unknown hid, or OLD: strip and pass */
			:: else ->
				/* hold_or_pass */
				if
				:: passing[me] -> busy[me] = s
#ifdef BUG_PASS_BEFORE_FLUSH
				:: !passing[me] && requested[me] && head[me] == tail[me] ->
#else
				:: !passing[me] && requested[me] && head[me] == tail[me] && flushed[me] == head[me] ->
#endif
					passing[me] = true; busy[me] = s;
					if
					:: me == B -> W(2)
					:: else -> skip
					fi
				:: else ->
					if
					:: tail[me] - head[me] >= RING -> overflow++; printf("ring of %d overflows: frame %d dropped\n", me, s)
					:: else -> ring[me * RING + tail[me] % RING] = s; tail[me]++;
						printf("agent %c: frame %d held\n", 'A' + me, s);
						if
						:: me == B -> W(1)
						:: else -> W(4)
						fi;
						if
						:: requested[me] && tail[me] == head[me] + 1 && flushed[me] != head[me] -> W(9)
						:: else -> skip
						fi
					fi
				fi
			fi
		fi;
		if
		:: busy[me] == s -> printf("agent %c: frame %d passes\n", 'A' + me, s)
		:: else ->				/* held or dropped: its run ends here */
			if
			:: pendFin[me] > 0 -> pendFin[me]--
			:: else -> skip
			fi
		fi;
		s = 0; ph = 0; h = 0; r = 0
	   }
	:: atomic { busy[me] != 0 -> vnf(me, busy[me]); out!busy[me];
		printf("VNF %c: frame %d processed and sent\n", 'A' + me, busy[me]); busy[me] = 0;
		if
		:: pendFin[me] > 0 -> pendFin[me]--
		:: else -> skip
		fi }
	od
}

/* P1 */
proctype Sink() {
	byte s;
end_sink:
	do
	:: out?s ->
		if
		:: s != expect -> printf("P1: sink got frame %d, expected %d\n", s, expect)
		:: else -> printf("sink: frame %d\n", s)
		fi;
		assert(s == expect);
		expect++
	od
}

/* P4, once nothing can move any more */
proctype Checker() {
	timeout ->
	if
	:: !engineDone -> printf("P4: the engine is stuck in step %e\n", step)
	:: engineDone && expect != N + 1 -> printf("P1: the sink got %d of %d frames (ring overflow: %d)\n", expect - 1, N, overflow)
	:: else -> skip
	fi;
	assert(engineDone);
	assert(expect == N + 1);
	assert(role[A * 3 + H] == NO && role[A * 3 + BACK] == NO && role[B * 3 + H] == NO);
	assert(actPhase == NONE);
	assert(step == completed && actPort == B || step == aborted && actPort == A)
}

/* ---------------------------------------------------------------- the controller */

proctype Engine() {
	/* volatile: lost on a restart */
	bool switched;
	bool fwd = true;			/* on the forward path (not rolling back) */
	byte preSent, k, s;

	/* ---- 1. arm: B holds shim(H) frames, A counts shim(H, PRE) */
	ENTER(arming);
	OP; swPre = 0;					/* resetHandoverCounters */
	OP; armNew(B, H);
	OP; atomic { role[A * 3 + H] = OLD; preSeen[A] = 0 }	/* armOld */

	/* ---- 2. pre-mark: still to A, now marked PRE and counted */
	ENTER(pre_marking);
	OP; setAct(A, PRE, H);
premark_wait:
#ifndef BUG_NO_PREMARK_WAIT
	/* ASSUMPTION Q1 (sleep(Q) after pre-marking): every unmarked frame the
	 * switch sent to A before the PRE mark - including one it was processing
	 * during the rule write - has reached A's agent. (Needed when no PRE frame
	 * is sent at all: then the PRE count covers nothing.) */
	QUIESCE(A, infl[A * 3 + NONE] == 0);
#endif

	/* ---- 3. switch over: to B, marked POST. switchedOver is set before the
	 * writes: one may take effect and a later one fail */
	ENTER(switching);
	switched = true;
	OP;
	atomic {
		if
		:: swPreInside -> W(6)
		:: else -> skip
		fi;
		setAct(B, POST, H)
	}
#ifdef FAIL_SWITCH_WRITE
	/* the write took effect, yet setAll reports a failure (with several rules:
	 * a later rule's write failed): switched is already true */
	if
	:: fails < MAX_FAILS -> fails++; printf("engine: setAll(to, POST) fails after the write\n"); goto rollback
	:: true -> skip
	fi;
#endif
switch_wait:					/* (the reconciler resumes here, switched = true) */
#ifndef BUG_NO_SWITCH_WAIT
	/* ASSUMPTION Q2 (sleep(Q) after the switch-over): every frame that read
	 * the PRE action has been counted and sent: pre_sent is final. */
	QUIESCE(A, !swPreInside);
#endif
	OP; preSent = swPre;				/* sumMarks(id).pre */

	/* ---- 4. drain A: its agent has counted every PRE frame */
	ENTER(draining);
	if
	:: preSeen[A] < preSent -> W(8)
	:: else -> skip
	fi;
#ifndef BUG_NO_DRAIN_WAIT
	if
	:: preSeen[A] >= preSent -> skip
	:: restarts < MAX_RESTARTS -> restarts++; printf("controller restart in step %e\n", step); goto reconcile
	:: fails < MAX_FAILS -> fails++; printf("draining times out\n"); goto rollback
	fi;
#endif
#ifndef BUG_NO_VNF_WAIT
	/* ASSUMPTION Q3 (sleep(Q) after the count): A's VNF has finished every
	 * frame A's agent counted (the agent counts before its VNF runs). */
	QUIESCE(A, busy[A] == 0);
#endif

	/* ---- 5. move state, now final at A */
	ENTER(moving_state);
#ifndef SINK_ONLY
	if
	:: procA != sentToA -> printf("P2: the state move begins, A has processed %d of the %d frames routed to it\n", procA, sentToA)
	:: else -> skip
	fi;
	assert(procA == sentToA);			/* P2, first half */
#endif
	aFrozen = true;
	OP; atomic { vstate[B] = vstate[A]; valid[B] = true }	/* mover.move: copy A's record to B */

	/* ---- 6. release B's ring in order, in the kernel; then new frames pass */
releasing_resume:
	ENTER(releasing);
	LATE_OP;
	release(B, false);

	/* ---- 7. clean up: stop marking, let the last marked frames land, forget H */
	ENTER(cleaning);
	LATE_OP; setAct(B, NONE, NOHID);
cleaning_wait:
	/* ASSUMPTION Q4 (sleep(Q) after unmarking): every POST frame has reached B. */
	QUIESCE(B, infl[B * 3 + POST] == 0);
	LATE_OP; role[A * 3 + BACK] = NO;		/* (armed only if a reconciler found a half-begun rollback) */
	LATE_OP; role[A * 3 + H] = NO;			/* disarm(from) */
	LATE_OP; role[B * 3 + H] = NO;			/* disarm(to) */
	CRASH;						/* (dies before it reports) */
	ENTER(completed);
	goto done;

	/* ---- catch: roll back */
rollback:
	ENTER(rolling_back);
	fwd = false;
	CRASH; valid[B] = false;			/* mover.rollback: drop B's copy */
	if
	:: !switched ->
		/* before switch-over: the rules go back unmarked */
		CRASH; setAct(A, NONE, NOHID);
rollback_before_wait:
		/* ASSUMPTION Q5 (sleep(Q)): every marked frame has reached A. */
		QUIESCE(A, infl[A * 3 + PRE] == 0 && infl[A * 3 + POST] == 0);
		CRASH; role[A * 3 + BACK] = NO;		/* (armed only after a half-done rollback after switch-over) */
		CRASH; role[A * 3 + H] = NO;
		CRASH; role[B * 3 + H] = NO
	:: else ->
		/* #rollbackAfterSwitch: A holds new frames under BACK, B relays its
		 * ring to A, A releases its own */
rollback_after:
		aFrozen = false;			/* the flow comes back to A */
		CRASH; armNew(A, BACK);
		CRASH; setAct(A, POST, BACK);
		/* ASSUMPTION Q6 (sleep(Q) after the switch-back): every frame sent to
		 * B has reached B's agent (held there, or through B's VNF). */
		QUIESCE(B, infl[B * 3 + POST] == 0 && busy[B] == 0);
		CRASH;
		release(B, true);
		/* ASSUMPTION Q7 (sleep(Q) after the relay): every relayed frame has
		 * reached A's agent and passed A's VNF. Always timed: the relayed
		 * frames wait at the switch's port towards B, where no barrier reaches. */
		QWAIT(relayInfl == 0 && busy[A] == 0);
		CRASH;
		release(A, false);
		CRASH; setAct(A, NONE, NOHID);
		/* ASSUMPTION Q8 (sleep(Q)): every POST(BACK) frame has reached A. */
		QUIESCE(A, infl[A * 3 + POST] == 0);
		CRASH; role[A * 3 + BACK] = NO;
		CRASH; role[A * 3 + H] = NO;
		CRASH; role[B * 3 + H] = NO
	fi;
	CRASH;
	ENTER(aborted);
	goto done;

	/*
	 * Restart: everything volatile is gone; what the data plane shows - the
	 * rule action, the switch's counter, the agents' armed ids, B's release
	 * state - decides whether to finish or to roll back. The engine has no
	 * reconciler yet: this is its specification (DESIGN.md, "Nodes and
	 * controller": "after a restart it reconciles every handover in flight").
	 */
reconcile:
	switched = false; preSent = 0; k = 0; s = 0; fwd = true;
	if
	:: role[A * 3 + H] == NO && role[A * 3 + BACK] == NO && role[B * 3 + H] == NO && actPhase == NONE ->
		/* nothing armed: not begun, or cleaned up */
		printf("reconcile: nothing armed\n");
		if
		:: actPort == B -> ENTER(completed)
		:: else -> ENTER(aborted)
		fi;
		goto done
	:: else -> skip
	fi;
	if
	:: actPhase == NONE && actPort == A ->
		/* armed, not marked: arming, or the end of a rollback */
		printf("reconcile: armed, unmarked: roll back\n");
		goto rollback_before_wait
	:: actPhase == PRE ->
		/* pre-marking: finish (Q1 again, then switch over) or roll back */
		if
		:: printf("reconcile: pre-marking: finish\n"); goto premark_wait
		:: printf("reconcile: pre-marking: roll back\n"); switched = false; goto rollback
		fi
	:: actPhase == POST && actPort == B && !requested[B] ->
		/* switched over, release not begun: B's VNF has seen nothing */
		switched = true;
		if
		:: printf("reconcile: switched over: finish\n"); goto switch_wait
		:: printf("reconcile: switched over: roll back\n"); goto rollback
		fi
	:: actPhase == POST && actPort == B && requested[B] ->
		/* the release began: B's VNF may have processed frames, finish it */
		printf("reconcile: releasing: finish\n");
		if
		:: head[B] != tail[B] -> W(7)
		:: else -> skip
		fi;
		switched = true;
		goto releasing_resume
	:: actPhase == POST && actPort == A ->
		/* a rollback after switch-over: finish it */
		printf("reconcile: rolling back after switch-over: finish\n");
		switched = true;
		goto rollback_after
	:: actPhase == NONE && actPort == B ->
		printf("reconcile: cleaning: finish\n");
		goto cleaning_wait
	fi;

done:
	engineDone = true
}

init {
	atomic {
		valid[A] = true;			/* A has the flow's state; vstate 0 = nothing seen yet */
		run Sender();
		run Switch();
		run Agent(A);
		run Agent(B);
		run Sink();
		run Checker();
		run Engine()
	}
}
