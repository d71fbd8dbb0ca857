/*-------------------------------------------------------------------------
 *
 * health.c
 *		The health of this server's hasched, from shared memory only: what
 *		hasched.health() returns and what the HTTP health listener serves.
 *		Nothing here reads a table or waits on a lock held by SQL, so it
 *		answers on a standby, while the database is busy, and in a process
 *		without a database connection.
 *
 * IDENTIFICATION
 *		src/core/health.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "replication/walreceiver.h"
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
		bool healthy, char *detail)
{
	rows[*n].component = component;
	rows[*n].status = status;
	rows[*n].healthy = healthy;
	rows[*n].detail = detail;
	(*n)++;
}

/*
 * Fill rows (room for HS_HEALTH_MAX_ROWS) with one row per component;
 * returns how many.  A row is healthy when its component does what it
 * should on this kind of server.
 */
int
hs_health_report(HsHealthRow *rows)
{
	HaschedShared snap;
	int			live;
	int			busy;
	int			n = 0;
	bool		standby = RecoveryInProgress();
	TimestampTz now = GetCurrentTimestamp();

	snapshot(&snap, &live, &busy);

	/* the server */
	if (standby)
	{
		TimeLineID	replay_tli = 0;

		(void) GetXLogReplayRecPtr(&replay_tli);
		add_row(rows, &n, "server", "standby", true,
				psprintf("replaying timeline %u%s", replay_tli,
						 hs_health_streaming() ? ", streaming" : ", not streaming"));
	}
	else
		add_row(rows, &n, "server", "primary", true,
				psprintf("timeline %u", GetWALInsertionTimeLine()));

	/* the scheduler */
	{
		const char *status;
		char	   *detail;

		if (snap.scheduler_pid == 0)
			status = "down";
		else if (snap.scheduler_role == HS_ROLE_PRIMARY && now - snap.last_tick > stall_usec())
			status = "stalled";
		else
			status = "ok";
		if (snap.scheduler_role == HS_ROLE_PRIMARY)
			detail = psprintf("primary since %s, pid %d, epoch %d, last round %s",
							  pstrdup(timestamptz_to_str(snap.role_since)), snap.scheduler_pid,
							  snap.epoch, pstrdup(timestamptz_to_str(snap.last_tick)));
		else
			detail = psprintf("%s since %s, pid %d",
							  role_names[snap.scheduler_role],
							  pstrdup(timestamptz_to_str(snap.role_since)), snap.scheduler_pid);
		add_row(rows, &n, "scheduler", status, strcmp(status, "ok") == 0, detail);
	}

	/* the executors */
	add_row(rows, &n, "executors", standby ? "standby" : "ok", true,
			psprintf("%d running (%d busy) of hasched.max_executors = %d",
					 live, busy, hs_max_executors));

	/* the HTTP health listener, when configured */
	if (hs_health_port > 0)
	{
		bool		up = snap.listener_pid != 0 && snap.listener_error[0] == '\0';

		add_row(rows, &n, "health listener", up ? "ok" : "failed", up,
				up ? psprintf("listening on port %d, pid %d", hs_health_port, snap.listener_pid) :
				psprintf("port %d: %s", hs_health_port,
						 snap.listener_error[0] ? snap.listener_error : "not running"));
	}

	/* the ZooKeeper coordinator, when configured: leading, or why fenced */
	if (hs_zookeeper_enabled())
	{
		const char *status;
		bool		healthy;
		char	   *detail;

		hs_fencing_health(&status, &healthy, &detail);
		add_row(rows, &n, "coordinator", status, healthy, detail);
	}

	/* the RabbitMQ dispatcher and its circuits, when configured */
	hs_circuit_health(rows, &n, standby);
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
