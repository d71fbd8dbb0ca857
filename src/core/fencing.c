/*-------------------------------------------------------------------------
 *
 * fencing.c
 *		The one gate of core: may this server act (fire schedules, start
 *		and run SQL jobs, hand out and take back leases) right now?  And the
 *		shared state behind it, written by the ZooKeeper coordinator.
 *
 * Without hasched.zookeeper the answer is "while it is the primary", as
 * always.  With it, the server must also hold hasched's ZooKeeper
 * leadership (the lowest ephemeral sequential znode of the election), and
 * its own clock must say that its session cannot have expired yet:
 *
 *		deadline = sent + session timeout - hasched.zookeeper_fence_margin
 *
 * where `sent` is when the coordinator sent the latest request that
 * ZooKeeper answered.  The server touched the session when it received that
 * request, so no other node can see this server's election znode gone (and
 * take over) before sent + session timeout; the margin covers the commit
 * that is under way when the deadline passes, and the difference of clock
 * rates.  The clock is CLOCK_BOOTTIME: it does not step with the wall
 * clock, and it runs on while the machine or the process is frozen, so a
 * server woken from SIGSTOP finds its deadline passed before it does
 * anything.
 *
 * Each time the gate opens (leadership gained, or regained after a fenced
 * spell) is a new term; the scheduler opens a new epoch for it (recording
 * the znode's sequence number, the fencing token) and only then does the
 * gate open, so every lease handed out in a term carries that term's epoch
 * in its token.
 *
 * Transactions that act (the scheduler's round, the executors' claims and
 * jobs, the pull API) ask for the gate again just before they commit
 * (hs_fencing_guard_xact): a transaction that began while the server could
 * act does not commit after it lost the right.  The coordinator, before it
 * closes its session on exit, closes the gate and waits for the commits
 * under way to finish.
 *
 * The coordinator also passes on the names of external workers whose
 * ephemeral znode vanished; the scheduler requeues their leases.
 *
 * IDENTIFICATION
 *		src/core/fencing.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <time.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

#define MAX_LOST_WORKERS	64

typedef struct LostWorker
{
	char		name[HS_WORKER_NAME_MAX + 1];
	TimestampTz at;
} LostWorker;

/*
 * The coordinator's state.  Written by the coordinator (and epoch_term by
 * the scheduler), read by everyone, under mutex.
 */
typedef struct HsFencing
{
	slock_t		mutex;
	pid_t		coordinator_pid;	/* 0: not running */
	int			state;			/* HS_ZK_* */
	TimestampTz state_since;
	bool		connected;		/* connected to a ZooKeeper server now */
	TimestampTz disconnected_at;	/* wall time it lost the connection */
	int64		session_id;
	int			timeout_ms;		/* the session timeout ZooKeeper granted */
	char		server[HS_ZK_INFO_MAX];	/* the server it is connected to, or the client's complaint */
	bool		leader;			/* holds the lowest election znode */
	int64		token;			/* that znode's sequence number */
	int64		sent;			/* hs_clock_usec() of the last answered request */
	int64		deadline;		/* the leader acts only before this */
	uint64		term;			/* bumped each time the gate may open again */
	uint64		epoch_term;		/* the term whose epoch the scheduler opened */
	int32		epoch;			/* that epoch */
	bool		closing;		/* the coordinator is exiting */
	char		leader_info[HS_ZK_INFO_MAX];	/* the leader, at last look */
	char		error[HS_ZK_INFO_MAX];	/* why it cannot lead; "" if nothing is wrong */

	/* guarded transactions between their pre-commit check and their end */
	pg_atomic_uint32 committing;

	/* workers whose ephemeral znode vanished, oldest first */
	int			lost_first;
	int			lost_count;
	bool		lost_overflow;
	LostWorker	lost[MAX_LOST_WORKERS];
} HsFencing;

static HsFencing *fencing = NULL;

/* backend-local: this transaction asks for the gate at commit */
static int	guard_level = 0;	/* 0 none, 1 leadership, 2 leadership and epoch */
static bool counted = false;	/* counted in committing */

static const char *const state_names[] = {
	"down", "starting", "connecting", "error", "standby", "electing",
	"leader", "closing"
};

Size
hs_fencing_shmem_size(void)
{
	return sizeof(HsFencing);
}

void
hs_fencing_shmem_init(void)
{
	bool		found;

	fencing = ShmemInitStruct("hasched fencing", sizeof(HsFencing), &found);
	if (!found)
	{
		memset(fencing, 0, sizeof(HsFencing));
		SpinLockInit(&fencing->mutex);
		pg_atomic_init_u32(&fencing->committing, 0);
		fencing->state = HS_ZK_DOWN;
	}
}

bool
hs_zookeeper_enabled(void)
{
	return hs_zookeeper != NULL && hs_zookeeper[0] != '\0';
}

/*
 * Microseconds on a clock that neither steps with the wall clock nor
 * stops while the machine sleeps; comparable between processes.
 */
int64
hs_clock_usec(void)
{
	struct timespec ts;

#ifdef CLOCK_BOOTTIME
	clock_gettime(CLOCK_BOOTTIME, &ts);
#else
	clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ------------------------------------------------------------------------
 * The gate
 * ------------------------------------------------------------------------ */

/* Leadership held and the deadline ahead; with_epoch: the term's epoch opened. */
static bool
leadership_ok(bool with_epoch)
{
	bool		ok;
	int64		now = hs_clock_usec();

	SpinLockAcquire(&fencing->mutex);
	ok = fencing->coordinator_pid != 0 && fencing->leader && !fencing->closing &&
		now < fencing->deadline &&
		(!with_epoch || fencing->epoch_term == fencing->term);
	SpinLockRelease(&fencing->mutex);
	return ok;
}

/*
 * May this server act now?  True on the primary when no ZooKeeper is
 * configured; with one, only while it leads, its deadline is ahead and the
 * epoch of its term is open.
 */
bool
hs_node_may_act(void)
{
	if (RecoveryInProgress())
		return false;
	if (!hs_zookeeper_enabled())
		return true;
	return leadership_ok(true);
}

/* Does the coordinator hold leadership with its deadline ahead? */
bool
hs_fencing_leader_ok(void)
{
	return hs_zookeeper_enabled() && leadership_ok(false);
}

/*
 * Why the gate is closed, in a sentence (for errors, health and the log);
 * or what the leader's state is when it is open.  Palloc'd.
 */
char *
hs_fencing_why(void)
{
	HsFencing	f;
	int64		now = hs_clock_usec();

	if (RecoveryInProgress())
		return pstrdup("This server is a standby.");
	if (!hs_zookeeper_enabled())
		return pstrdup("No ZooKeeper is configured (hasched.zookeeper is empty).");

	SpinLockAcquire(&fencing->mutex);
	memcpy(&f, fencing, offsetof(HsFencing, committing));
	SpinLockRelease(&fencing->mutex);

	if (f.coordinator_pid == 0)
		return pstrdup("The ZooKeeper coordinator is not running.");
	if (f.closing)
		return pstrdup("The ZooKeeper coordinator is shutting down.");
	if (f.error[0] != '\0')
		return psprintf("The ZooKeeper coordinator cannot lead: %s.", f.error);
	if (f.leader && now >= f.deadline)
		return psprintf("No answer from ZooKeeper for %lld ms: this server fenced itself %lld ms ago, %d ms (the session timeout, %d ms, less hasched.zookeeper_fence_margin, %d ms) after its last answered request%s.",
						(long long) ((now - f.sent) / 1000),
						(long long) ((now - f.deadline) / 1000),
						f.timeout_ms - hs_zookeeper_fence_margin,
						f.timeout_ms, hs_zookeeper_fence_margin,
						f.connected ? "" : "; it is not connected");
	if (f.leader && f.epoch_term != f.term)
		return psprintf("Leadership was gained (fencing token %lld); the scheduler is opening the epoch of the new term.",
						(long long) f.token);
	if (f.leader)
		return psprintf("This server leads (fencing token %lld, epoch %d).",
						(long long) f.token, f.epoch);
	if (!f.connected && f.session_id == 0)
		return psprintf("Not connected to ZooKeeper (hasched.zookeeper = '%s')%s.",
						hs_zookeeper, f.server[0] ? psprintf(": %s", f.server) : "");
	if (!f.connected)
		return psprintf("Not leading: the ZooKeeper connection was lost at %s and the election is not done.",
						timestamptz_to_str(f.disconnected_at));
	if (f.leader_info[0] != '\0')
		return psprintf("Another server holds hasched's ZooKeeper leadership: %s.", f.leader_info);
	return pstrdup("Not leading yet: the ZooKeeper election is under way.");
}

/*
 * Refuse, with JQ024, an action of the pull API (claim, heartbeat,
 * complete, fail) on a server that may not act; and ask for the gate again
 * when the transaction commits.  Call after hs_require_primary().
 */
void
hs_require_leader(const char *what)
{
	if (!hs_zookeeper_enabled())
		return;
	hs_fencing_guard_xact(true);
	if (!leadership_ok(true))
		ereport(ERROR,
				(errcode(HS_ERRCODE_NOT_LEADER),
				 errmsg("cannot %s: this server does not hold hasched's ZooKeeper leadership", what),
				 errdetail_internal("%s", hs_fencing_why()),
				 errhint("Send the request to the server whose hasched.health() shows the coordinator as leader; this one acts again only once it leads.")));
}

/*
 * Ask for the gate when this transaction commits (with_epoch: the full
 * gate; without: leadership only, for the transaction that opens the
 * term's epoch).  No-op without ZooKeeper.
 */
void
hs_fencing_guard_xact(bool with_epoch)
{
	if (!hs_zookeeper_enabled())
		return;
	guard_level = Max(guard_level, with_epoch ? 2 : 1);
}

/* The transaction callback's part (wakeup.c calls it for every event). */
void
hs_fencing_xact_event(XactEvent event)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (guard_level == 0 || fencing == NULL)
				break;
			/* count first, then look: the coordinator's drain sees us either way */
			pg_atomic_fetch_add_u32(&fencing->committing, 1);
			counted = true;
			if (!leadership_ok(guard_level == 2))
				ereport(ERROR,
						(errcode(HS_ERRCODE_NOT_LEADER),
						 errmsg("not committing: this server lost hasched's ZooKeeper leadership during the transaction"),
						 errdetail_internal("%s", hs_fencing_why()),
						 errhint("Nothing of this transaction was recorded; the server that leads now will do the work.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			if (counted)
				pg_atomic_fetch_sub_u32(&fencing->committing, 1);
			counted = false;
			guard_level = 0;
			break;
	}
}

/* ------------------------------------------------------------------------
 * What the coordinator publishes
 * ------------------------------------------------------------------------ */

static void
set_state_locked(int state)
{
	if (fencing->state != state)
	{
		fencing->state = state;
		fencing->state_since = GetCurrentTimestamp();
	}
}

/* Wake the scheduler for a whole round (a leadership change, a lost worker). */
static void
wake_scheduler(void)
{
	Latch	   *latch;

	pg_atomic_write_u32(&hs_shared->round_requested, 1);
	SpinLockAcquire(&hs_shared->mutex);
	latch = hs_shared->scheduler_latch;
	SpinLockRelease(&hs_shared->mutex);
	if (latch)
		SetLatch(latch);
}

/* The coordinator starts (pid) or has exited (0): no leadership either way. */
void
hs_fencing_attach(pid_t pid)
{
	SpinLockAcquire(&fencing->mutex);
	fencing->coordinator_pid = pid;
	fencing->leader = false;
	fencing->deadline = 0;
	fencing->connected = false;
	fencing->session_id = 0;
	fencing->closing = false;
	fencing->error[0] = '\0';
	fencing->leader_info[0] = '\0';
	fencing->server[0] = '\0';
	fencing->lost_count = 0;
	set_state_locked(pid ? HS_ZK_STARTING : HS_ZK_DOWN);
	SpinLockRelease(&fencing->mutex);
}

/* The session's state; error "" when nothing is wrong. */
void
hs_fencing_set_session(int state, bool connected, int64 session_id, int timeout_ms,
					   const char *server, const char *error)
{
	SpinLockAcquire(&fencing->mutex);
	set_state_locked(state);
	if (fencing->connected && !connected)
		fencing->disconnected_at = GetCurrentTimestamp();
	fencing->connected = connected;
	fencing->session_id = session_id;
	fencing->timeout_ms = timeout_ms;
	strlcpy(fencing->server, server ? server : "", sizeof(fencing->server));
	strlcpy(fencing->error, error ? error : "", sizeof(fencing->error));
	SpinLockRelease(&fencing->mutex);
}

/*
 * Leadership gained (leader, with the znode's sequence number as token and
 * the time the request that showed it was sent) or lost.  A gain starts a
 * new term and wakes the scheduler to open its epoch.
 */
void
hs_fencing_set_leader(bool leader, int64 token, int64 sent, const char *leader_info)
{
	bool		gained;

	SpinLockAcquire(&fencing->mutex);
	gained = leader && !fencing->leader;
	fencing->leader = leader;
	fencing->token = leader ? token : 0;
	if (gained)
	{
		fencing->term++;
		fencing->sent = sent;
		fencing->deadline = sent + ((int64) fencing->timeout_ms - hs_zookeeper_fence_margin) * 1000;
	}
	else if (!leader)
		fencing->deadline = 0;
	strlcpy(fencing->leader_info, leader_info ? leader_info : "", sizeof(fencing->leader_info));
	SpinLockRelease(&fencing->mutex);
	if (gained)
		wake_scheduler();
}

/*
 * ZooKeeper answered a request sent at `sent` (hs_clock_usec): the session
 * lives until at least sent + session timeout.  A leader whose deadline had
 * passed starts a new term: the gate opens again only with a new epoch.
 * Returns the deadline (0 when not leading).
 */
int64
hs_fencing_confirm(int64 sent)
{
	bool		renewed = false;
	int64		deadline;

	SpinLockAcquire(&fencing->mutex);
	if (sent > fencing->sent)
	{
		if (fencing->leader && fencing->deadline != 0 && hs_clock_usec() >= fencing->deadline)
		{
			fencing->term++;
			renewed = true;
		}
		fencing->sent = sent;
		if (fencing->leader)
			fencing->deadline = sent + ((int64) fencing->timeout_ms - hs_zookeeper_fence_margin) * 1000;
	}
	deadline = fencing->leader ? fencing->deadline : 0;
	SpinLockRelease(&fencing->mutex);
	if (renewed)
		wake_scheduler();
	return deadline;
}

/*
 * The coordinator exits: close the gate, then wait (at most wait_ms) for
 * the guarded commits under way, so that none ends after the session (and
 * with it the election znode) is gone.
 */
void
hs_fencing_close(int wait_ms)
{
	int64		until = hs_clock_usec() + (int64) wait_ms * 1000;

	SpinLockAcquire(&fencing->mutex);
	fencing->closing = true;
	fencing->leader = false;
	fencing->deadline = 0;
	set_state_locked(HS_ZK_CLOSING);
	SpinLockRelease(&fencing->mutex);
	while (pg_atomic_read_u32(&fencing->committing) > 0 && hs_clock_usec() < until)
		pg_usleep(1000);
}

/*
 * The gate just closed: interrupt the executors' running jobs (as
 * cancel() does) so that none goes on past the fence.  Their jobs stay
 * running under the old epoch; the next term's epoch runs them again.
 */
void
hs_fencing_stop_executors(void)
{
	pid_t		pids[64];
	int			n = 0;

	SpinLockAcquire(&hs_shared->mutex);
	for (int i = 0; i < hs_max_executors && n < lengthof(pids); i++)
	{
		HsExecutorSlot *s = &hs_executors[i];

		if (s->state == HS_EXEC_BUSY && s->job_id != 0 && s->pid != 0)
		{
			pg_atomic_write_u64(&s->stop_job_id, (uint64) s->job_id);
			pids[n++] = s->pid;
		}
	}
	SpinLockRelease(&hs_shared->mutex);
	for (int i = 0; i < n; i++)
		(void) kill(pids[i], SIGINT);
}

/* ------------------------------------------------------------------------
 * The scheduler's side: terms and epochs
 * ------------------------------------------------------------------------ */

/*
 * Is there a term whose epoch is not open yet (and does the coordinator
 * still lead)?  Then *term and *token say which.
 */
bool
hs_fencing_term_pending(uint64 *term, int64 *token)
{
	bool		pending;

	if (!hs_fencing_leader_ok())
		return false;
	SpinLockAcquire(&fencing->mutex);
	pending = fencing->epoch_term != fencing->term;
	*term = fencing->term;
	*token = fencing->token;
	SpinLockRelease(&fencing->mutex);
	return pending;
}

/* The scheduler committed the epoch of term: the gate may open. */
void
hs_fencing_epoch_opened(uint64 term, int32 epoch)
{
	SpinLockAcquire(&fencing->mutex);
	fencing->epoch_term = term;
	fencing->epoch = epoch;
	SpinLockRelease(&fencing->mutex);
}

/* ------------------------------------------------------------------------
 * Lost workers: from the coordinator to the scheduler
 * ------------------------------------------------------------------------ */

/* A worker's ephemeral znode vanished at `at`: requeue its leases. */
void
hs_fencing_worker_lost(const char *name, TimestampTz at)
{
	SpinLockAcquire(&fencing->mutex);
	if (fencing->lost_count < MAX_LOST_WORKERS)
	{
		LostWorker *w = &fencing->lost[(fencing->lost_first + fencing->lost_count) % MAX_LOST_WORKERS];

		strlcpy(w->name, name, sizeof(w->name));
		w->at = at;
		fencing->lost_count++;
	}
	else
		fencing->lost_overflow = true;
	SpinLockRelease(&fencing->mutex);
	wake_scheduler();
}

/* The next lost worker, oldest first; false when there is none. */
bool
hs_fencing_next_lost_worker(char *name, TimestampTz *at)
{
	bool		found = false;

	SpinLockAcquire(&fencing->mutex);
	if (fencing->lost_count > 0)
	{
		LostWorker *w = &fencing->lost[fencing->lost_first];

		strlcpy(name, w->name, HS_WORKER_NAME_MAX + 1);
		*at = w->at;
		fencing->lost_first = (fencing->lost_first + 1) % MAX_LOST_WORKERS;
		fencing->lost_count--;
		found = true;
	}
	SpinLockRelease(&fencing->mutex);
	return found;
}

/* ------------------------------------------------------------------------
 * Health
 * ------------------------------------------------------------------------ */

/*
 * The coordinator's health row: status ok (leading; or, on a standby,
 * connected), degraded (a standby not connected) or failed (a primary that
 * does not lead), and a detail whose first word is the state: leader,
 * standby, fenced, down or error.
 */
void
hs_fencing_health(const char **status, char **detail)
{
	HsFencing	f;
	bool		standby = RecoveryInProgress();
	bool		acting = hs_node_may_act();
	char	   *why = hs_fencing_why();

	SpinLockAcquire(&fencing->mutex);
	memcpy(&f, fencing, offsetof(HsFencing, committing));
	SpinLockRelease(&fencing->mutex);

	if (acting)
	{
		*status = "ok";
		*detail = psprintf("leader since %s, fencing token %lld, epoch %d, session 0x%llx on %s, session timeout %d ms, fences itself %lld ms from now unless ZooKeeper answers",
						   timestamptz_to_str(f.state_since), (long long) f.token, f.epoch,
						   (unsigned long long) f.session_id, f.server, f.timeout_ms,
						   (long long) ((f.deadline - hs_clock_usec()) / 1000));
		return;
	}
	if (f.coordinator_pid != 0 && f.error[0] == '\0' && standby)
	{
		*status = f.connected ? "ok" : "degraded";
		*detail = f.connected ?
			psprintf("standby: not in the election; session 0x%llx on %s%s%s",
					 (unsigned long long) f.session_id, f.server,
					 f.leader_info[0] ? "; leader: " : "", f.leader_info) :
			psprintf("standby: not connected to ZooKeeper (hasched.zookeeper = '%s')%s%s",
					 hs_zookeeper, f.server[0] ? ": " : "", f.server);
		return;
	}
	/* the first word of the detail says which: fenced, down or error */
	*status = "failed";
	*detail = psprintf("%sfenced (%s): %s",
					   f.coordinator_pid == 0 ? "down: " :
					   f.error[0] != '\0' ? "error: " : "", state_names[f.state], why);
}
