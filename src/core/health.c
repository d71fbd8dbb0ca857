/*-------------------------------------------------------------------------
 *
 * health.c
 *		The health of this server's hasched, from shared memory only: what
 *		hasched.health() returns and what the HTTP health listener serves.
 *		Nothing here reads a table or waits on a lock held by SQL, so it
 *		answers on a standby, while the database is busy, and in a process
 *		without a database connection.
 *
 * One row per component, each with a status -- ok, degraded (works, but
 * look: a person should act before it fails) or failed (does not do its
 * job) -- and a detail that says what is wrong and what to do.  The first
 * row, "overall", is the worst of the others.  The rows, in order:
 *
 *	overall, server, replication, scheduler, executors, backlog, mode,
 *	health listener (when hasched.health_port is set), coordinator (when
 *	hasched.zookeeper is set), dispatcher and circuits (when
 *	hasched.amqp_url is set: circuit.c's rows, their own state word moved
 *	to the head of the detail).
 *
 * The backlog and mode rows show what the scheduler last counted
 * (metrics.c, every hasched.stats_interval); the others read shared state
 * as it is now.
 *
 * IDENTIFICATION
 *		src/core/health.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "replication/slot.h"
#include "replication/syncrep.h"
#include "replication/walreceiver.h"
#include "replication/walsender_private.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

static const char *const role_names[] = {"down", "starting", "standby", "primary"};

/* A round older than this means the scheduler is stalled. */
static int64
stall_usec(void)
{
	return 10 * (int64) Max(hs_scheduler_naptime, 1000) * 1000;
}

static void
snapshot(HaschedShared *snap, int *live, int *busy)
{
	*live = *busy = 0;
	SpinLockAcquire(&hs_shared->mutex);
	memcpy(snap, hs_shared, offsetof(HaschedShared, writer_since));
	for (int i = 0; i < hs_max_executors; i++)
	{
		if (hs_executors[i].state != HS_EXEC_FREE)
			(*live)++;
		if (hs_executors[i].state == HS_EXEC_BUSY)
			(*busy)++;
	}
	SpinLockRelease(&hs_shared->mutex);
}

static void
add_row(HsHealthRow *rows, int *n, const char *component, const char *status,
		char *detail)
{
	if (*n >= HS_HEALTH_MAX_ROWS)
		return;
	rows[*n].component = component;
	rows[*n].status = status;
	rows[*n].healthy = strcmp(status, "failed") != 0;
	rows[*n].detail = detail;
	(*n)++;
}

static double
seconds(int64 usec)
{
	return (double) usec / 1e6;
}

static char *
ts(TimestampTz t)
{
	return pstrdup(timestamptz_to_str(t));
}

/* ------------------------------------------------------------------------
 * Replication
 * ------------------------------------------------------------------------ */

/* On a standby: is the WAL receiver streaming, how far behind is replay. */
static void
standby_replication(HsHealthRow *rows, int *n, TimestampTz now)
{
	WalRcvState state = WALRCV_STOPPED;
	TimestampTz last_msg = 0;
	char		host[NI_MAXHOST] = "";
	int			port = 0;
	XLogRecPtr	received = InvalidXLogRecPtr;
	XLogRecPtr	replayed = GetXLogReplayRecPtr(NULL);
	TimestampTz last_commit = GetLatestXTime();
	char	   *commit_text;

	if (WalRcv != NULL)
	{
		SpinLockAcquire(&WalRcv->mutex);
		state = WalRcv->walRcvState;
		last_msg = WalRcv->lastMsgReceiptTime;
		strlcpy(host, WalRcv->sender_host, sizeof(host));
		port = WalRcv->sender_port;
		received = WalRcv->flushedUpto;
		SpinLockRelease(&WalRcv->mutex);
	}
	commit_text = last_commit != 0 ?
		psprintf("; the last commit replayed was made at %s", ts(last_commit)) : "";
	if (state == WALRCV_STREAMING)
		add_row(rows, n, "replication", "ok",
				psprintf("streaming from %s:%d; %llu bytes received and not yet replayed; last message from the primary %.1f s ago%s",
						 host[0] ? host : "?", port,
						 (unsigned long long) (received > replayed ? received - replayed : 0),
						 last_msg ? seconds(now - last_msg) : -1.0, commit_text));
	else
		add_row(rows, n, "replication", "degraded",
				psprintf("not streaming (the WAL receiver is %s): this standby falls behind and cannot be promoted without data loss; check primary_conninfo and the primary's log%s",
						 state == WALRCV_STOPPED ? "stopped" :
						 state == WALRCV_STARTING ? "starting" :
						 state == WALRCV_WAITING ? "waiting" :
						 state == WALRCV_RESTARTING ? "restarting" : "stopping",
						 commit_text));
}

/*
 * On the primary: the standbys that stream, the synchronous ones that
 * synchronous_standby_names asks for, their lag, and replication slots no
 * standby uses.
 */
static void
primary_replication(HsHealthRow *rows, int *n)
{
	int			streaming = 0;
	int			sync_streaming = 0;
	int			needed = 0;
	int64		max_lag_us = -1;
	uint64		max_lag_bytes = 0;
	XLogRecPtr	flushed = GetFlushRecPtr(NULL);
	int			idle_slots = 0;
	char		idle_slot[NAMEDATALEN] = "";
	StringInfoData d;
	const char *status = "ok";

	for (int i = 0; WalSndCtl != NULL && i < max_wal_senders; i++)
	{
		WalSnd	   *w = &WalSndCtl->walsnds[i];
		pid_t		pid;
		WalSndState state;
		int			priority;
		XLogRecPtr	flush;
		TimeOffset	lag;

		SpinLockAcquire(&w->mutex);
		pid = w->pid;
		state = w->state;
		priority = w->sync_standby_priority;
		flush = w->flush;
		lag = w->applyLag;
		SpinLockRelease(&w->mutex);
		if (pid == 0 || state != WALSNDSTATE_STREAMING)
			continue;
		streaming++;
		if (priority > 0)
			sync_streaming++;
		max_lag_us = Max(max_lag_us, lag);
		if (flush != InvalidXLogRecPtr && flushed > flush)
			max_lag_bytes = Max(max_lag_bytes, flushed - flush);
	}
	if (SyncRepStandbyNames != NULL && SyncRepStandbyNames[0] != '\0')
		needed = SyncRepConfig != NULL ? SyncRepConfig->num_sync : 1;

	for (int i = 0; ReplicationSlotCtl != NULL && i < max_replication_slots; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];
		bool		unused;

		SpinLockAcquire(&s->mutex);
		unused = s->in_use && s->active_pid == 0 && s->data.database == InvalidOid;
		if (unused && idle_slots == 0)
			strlcpy(idle_slot, NameStr(s->data.name), sizeof(idle_slot));
		SpinLockRelease(&s->mutex);
		if (unused)
			idle_slots++;
	}

	initStringInfo(&d);
	if (needed > 0 && sync_streaming < needed)
	{
		status = "failed";
		appendStringInfo(&d, "synchronous_standby_names asks for %d synchronous standby(s) and %d stream: commits, submits among them, wait until one connects; start a standby or change synchronous_standby_names. ",
						 needed, sync_streaming);
	}
	else if (idle_slots > 0)
	{
		status = "degraded";
		appendStringInfo(&d, "%d physical replication slot(s) unused (\"%s\"%s): the standby that uses it is not connected, and the primary keeps WAL for it; reconnect it or drop the slot. ",
						 idle_slots, idle_slot, idle_slots > 1 ? ", ..." : "");
	}
	if (streaming == 0)
		appendStringInfoString(&d, "no standby streams");
	else
	{
		appendStringInfo(&d, "%d standby(s) stream", streaming);
		if (needed > 0)
			appendStringInfo(&d, ", %d of them synchronous (%d needed)", sync_streaming, needed);
		appendStringInfo(&d, "; the furthest behind has flushed %llu bytes less", (unsigned long long) max_lag_bytes);
		if (max_lag_us >= 0)
			appendStringInfo(&d, ", replay lag %.3f s", seconds(max_lag_us));
	}
	add_row(rows, n, "replication", status, d.data);
}

/* ------------------------------------------------------------------------
 * The scheduler's figures: backlog and mode
 * ------------------------------------------------------------------------ */

static void
backlog_row(HsHealthRow *rows, int *n, const HsFigures *f, bool read, TimestampTz now)
{
	const HsQueueFigures *t = &f->total;
	int64		waiting;
	int64		stale_after = 3 * Max((int64) hs_stats_interval * 1000, f->spacing_usec) + stall_usec();
	StringInfoData d;
	const char *status = "ok";

	if (!read || f->counted_at == 0)
	{
		add_row(rows, n, "backlog", "degraded",
				pstrdup(read ? "not counted yet: the scheduler counts the jobs every hasched.stats_interval once the extension exists in hasched.database" :
						"the figures could not be read (the scheduler was writing them); ask again"));
		return;
	}
	waiting = t->jobs[HS_STATE_SCHEDULED] + t->jobs[HS_STATE_PENDING] + t->jobs[HS_STATE_FAILED];
	initStringInfo(&d);
	if (now - f->counted_at > stale_after)
	{
		status = "degraded";
		appendStringInfo(&d, "counted %.0f s ago (the scheduler has not counted since: see its row); ",
						 seconds(now - f->counted_at));
	}
	if (t->oldest_due != 0 && hs_health_due_age > 0 &&
		now - t->oldest_due > (int64) hs_health_due_age * 1000)
	{
		status = "degraded";
		appendStringInfo(&d, "a due job has waited %.0f s in queue \"%s\" (more than hasched.health_due_age): start workers for it or more executors; ",
						 seconds(now - t->oldest_due), f->oldest_due_queue);
	}
	appendStringInfo(&d, INT64_FORMAT " waiting (" INT64_FORMAT " pending, " INT64_FORMAT " scheduled, " INT64_FORMAT " to retry), " INT64_FORMAT " running, " INT64_FORMAT " dispatched in %d queue(s)",
					 waiting, t->jobs[HS_STATE_PENDING], t->jobs[HS_STATE_SCHEDULED],
					 t->jobs[HS_STATE_FAILED], t->jobs[HS_STATE_RUNNING],
					 t->jobs[HS_STATE_DISPATCHED], f->queues_total);
	if (t->oldest_due != 0)
		appendStringInfo(&d, "; the oldest due job has waited %.3f s (queue \"%s\")",
						 seconds(Max(f->counted_at - t->oldest_due, 0)), f->oldest_due_queue);
	else
		appendStringInfoString(&d, "; no job is due");
	appendStringInfo(&d, "; counted at %s, every %.1f s (the count used %.3f s of CPU)",
					 ts(f->counted_at), seconds(Max((int64) hs_stats_interval * 1000, f->spacing_usec)),
					 seconds(f->cpu_usec));
	add_row(rows, n, "backlog", status, d.data);
}

/*
 * The mode: hasched.state as the scheduler last read it (set_mode()), and
 * the automatic modes of degrade.c (read-only under overload, priority
 * hold-back) from their shared state.  Degraded while any is in force.
 */
static void
mode_row(HsHealthRow *rows, int *n, const HsFigures *f, bool read)
{
	HsDegradeStatus st;
	StringInfoData d;
	bool		degraded = false;

	hs_degrade_status(&st);
	initStringInfo(&d);
	if (!read || f->mode == HS_MODE_UNKNOWN)
	{
		degraded = true;
		appendStringInfoString(&d, "not read yet: the scheduler reads hasched.state every hasched.stats_interval");
	}
	else if (f->mode == HS_MODE_NORMAL)
		appendStringInfo(&d, "normal since %s", ts(f->mode_since));
	else
	{
		degraded = true;
		appendStringInfo(&d, "%s since %s%s%s: %s; end it with SELECT hasched.set_mode('normal')",
						 hs_mode_name(f->mode), ts(f->mode_since),
						 f->mode_reason[0] ? ", reason: " : "", f->mode_reason,
						 f->mode == HS_MODE_READ_ONLY ?
						 "submissions are refused (JQ003), claims and reports go on" :
						 "submissions are accepted, no job is handed out");
	}
	if (st.read_only)
	{
		degraded = true;
		appendStringInfo(&d, "; automatic read-only since %s (%s): submissions are refused (JQ003) until the load falls, or set_mode('normal') overrides it",
						 ts(st.read_only_since), st.read_only_why);
	}
	if (st.holdback)
	{
		degraded = true;
		appendStringInfo(&d, "; priority hold-back since %s: a due job of medium priority waits %.0f s, of low priority %.0f s",
						 ts(st.holdback_since),
						 seconds(st.holdback_us[HS_PRIORITY_MEDIUM]),
						 seconds(st.holdback_us[HS_PRIORITY_LOW]));
	}
	add_row(rows, n, "mode", degraded ? "degraded" : "ok", d.data);
}

/*
 * A row whose status is its component's own word (the dispatcher's:
 * standby, down, no broker, open, ...): the status becomes ok, degraded or
 * failed, and the word, unless it is ok, the first of the detail.
 */
static void
normalize_row(HsHealthRow *r)
{
	const char *word = r->status;

	if (strcmp(word, "ok") == 0)
		return;
	r->status = !r->healthy ? "failed" :
		(strcmp(word, "standby") == 0 || strcmp(word, "fenced") == 0) ? "ok" : "degraded";
	r->detail = psprintf("%s: %s", word, r->detail);
}

/* ------------------------------------------------------------------------
 * The report
 * ------------------------------------------------------------------------ */

/*
 * Fill rows (room for HS_HEALTH_MAX_ROWS) with one row per component, the
 * first the overall one; returns how many.
 */
int
hs_health_report(HsHealthRow *rows)
{
	HaschedShared snap;
	HsFigures  *figures = hs_figures_alloc();
	bool		figures_read;
	int			live;
	int			busy;
	int			n = 1;			/* rows[0]: overall, filled last */
	bool		standby = RecoveryInProgress();
	TimestampTz now = GetCurrentTimestamp();

	snapshot(&snap, &live, &busy);
	figures_read = hs_figures_read(figures);

	/* the server */
	if (standby)
	{
		TimeLineID	replay_tli = 0;

		(void) GetXLogReplayRecPtr(&replay_tli);
		add_row(rows, &n, "server", "ok",
				psprintf("standby, replaying timeline %u%s", replay_tli,
						 hs_health_streaming() ? ", streaming" : ", not streaming"));
		standby_replication(rows, &n, now);
	}
	else
	{
		add_row(rows, &n, "server", "ok",
				psprintf("primary, timeline %u", GetWALInsertionTimeLine()));
		primary_replication(rows, &n);
	}

	/* the scheduler: alive, and its last round recent */
	{
		int64		age = snap.last_round != 0 ? now - snap.last_round : -1;
		int64		work_age = snap.last_tick != 0 ? now - snap.last_tick : -1;
		const char *status = "ok";
		char	   *detail;

		if (snap.scheduler_role == HS_ROLE_PRIMARY)
			detail = psprintf("primary since %s, pid %d, epoch %d, last round %.3f s ago (at %s)",
							  ts(snap.role_since), snap.scheduler_pid, snap.epoch,
							  seconds(Max(work_age, 0)), ts(snap.last_tick));
		else
			detail = psprintf("%s since %s, pid %d, last round %.3f s ago",
							  role_names[snap.scheduler_role], ts(snap.role_since),
							  snap.scheduler_pid, seconds(Max(age, 0)));
		if (snap.scheduler_pid == 0)
		{
			status = "failed";
			detail = psprintf("down: no scheduler process; the postmaster restarts it within a second, see the server log for why it exited (%s)",
							  detail);
		}
		else if ((snap.scheduler_role == HS_ROLE_PRIMARY && work_age > stall_usec()) ||
				 age > stall_usec())
		{
			status = "failed";
			detail = psprintf("stalled: no round for %.0f s (bound %.0f s, 10 x hasched.scheduler_naptime); a lock or a slow query holds it, see pg_stat_activity for backend_type 'hasched scheduler' (%s)",
							  seconds(Max(work_age, age)), seconds(stall_usec()), detail);
		}
		add_row(rows, &n, "scheduler", status, detail);
	}

	/* the executors */
	if (standby)
		add_row(rows, &n, "executors", "ok",
				pstrdup("standby: executors run only on the primary"));
	else
	{
		TimestampTz failed_at = hs_executor_start_failed_at();
		bool		failing = failed_at != 0 && now - failed_at < 60 * USECS_PER_SEC;

		add_row(rows, &n, "executors", failing ? "degraded" : "ok",
				psprintf("%s%d running (%d busy) of hasched.max_executors = %d",
						 failing ? psprintf("could not start an executor %.0f s ago: raise max_worker_processes; ", seconds(now - failed_at)) : "",
						 live, busy, hs_max_executors));
	}

	/* what the scheduler counted */
	backlog_row(rows, &n, figures, figures_read, now);
	mode_row(rows, &n, figures, figures_read);

	/* the HTTP health listener, when configured */
	if (hs_health_port > 0)
	{
		bool		up = snap.listener_pid != 0 && snap.listener_error[0] == '\0';

		add_row(rows, &n, "health listener", up ? "ok" : "failed",
				up ? psprintf("listening on port %d, pid %d", hs_health_port, snap.listener_pid) :
				psprintf("port %d: %s", hs_health_port,
						 snap.listener_error[0] ? snap.listener_error : "not running"));
	}

	/* the ZooKeeper coordinator, when configured: session and leadership */
	if (hs_zookeeper_enabled())
	{
		const char *status;
		char	   *detail;

		hs_fencing_health(&status, &detail);
		add_row(rows, &n, "coordinator", status, detail);
	}

	/* the RabbitMQ dispatcher and its circuits, when configured */
	{
		int			first = n;

		hs_circuit_health(rows, &n, standby);
		for (int i = first; i < n; i++)
			normalize_row(&rows[i]);
	}

	/* overall: the worst of them */
	{
		StringInfoData d;
		int			failed = 0;
		int			degraded = 0;

		initStringInfo(&d);
		for (int i = 1; i < n; i++)
			if (strcmp(rows[i].status, "ok") != 0)
			{
				appendStringInfo(&d, "%s%s %s", d.len ? ", " : "", rows[i].component, rows[i].status);
				if (strcmp(rows[i].status, "failed") == 0)
					failed++;
				else
					degraded++;
			}
		rows[0].component = "overall";
		rows[0].status = failed ? "failed" : degraded ? "degraded" : "ok";
		rows[0].healthy = failed == 0;
		rows[0].detail = d.len ? psprintf("%s: see those rows", d.data) :
			psprintf("all %d components ok", n - 1);
	}
	return n;
}

/* Is this server the primary with its scheduler active (GET /primary)? */
bool
hs_health_active_primary(void)
{
	HaschedShared snap;
	int			live;
	int			busy;

	if (RecoveryInProgress())
		return false;
	snapshot(&snap, &live, &busy);
	return snap.scheduler_pid != 0 && snap.scheduler_role == HS_ROLE_PRIMARY &&
		GetCurrentTimestamp() - snap.last_tick <= stall_usec() &&
		hs_node_may_act();
}

/* Is this server a standby whose WAL receiver streams (GET /replica)? */
bool
hs_health_streaming(void)
{
	WalRcvState state;

	if (!RecoveryInProgress() || WalRcv == NULL)
		return false;
	SpinLockAcquire(&WalRcv->mutex);
	state = WalRcv->walRcvState;
	SpinLockRelease(&WalRcv->mutex);
	return state == WALRCV_STREAMING;
}

/* The listener's state, for health: an error text, or "" when it listens. */
void
hs_health_set_listener(pid_t pid, const char *error)
{
	SpinLockAcquire(&hs_shared->mutex);
	hs_shared->listener_pid = pid;
	strlcpy(hs_shared->listener_error, error ? error : "", sizeof(hs_shared->listener_error));
	SpinLockRelease(&hs_shared->mutex);
}
