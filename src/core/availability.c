/*-------------------------------------------------------------------------
 *
 * availability.c
 *		The scheduler's heartbeat, from which hasched.availability() infers
 *		the time no primary scheduled: hasched.epoch.last_round_at, and a
 *		scheduler_down event for a gap within an epoch.
 *
 * The primary's scheduler writes the time of its latest round into its
 * epoch's row at most about once a second, in a transaction of its own
 * committed asynchronously (a heartbeat must never wait for a synchronous
 * standby, and losing the last one in a crash costs only a second of
 * precision).  So:
 *  - across a failover (or a ZooKeeper leadership term change), the time
 *    without a primary is from the old epoch's last_round_at to the new
 *    epoch's started_at (its first round);
 *  - within an epoch (the scheduler crashed and was restarted, the server
 *    restarted without a promotion, a round stalled), the heartbeat that
 *    finds the previous one older than the allowed gap records a
 *    scheduler_down event with the gap's bounds.
 * availability() (SQL, in the upgrade script) reads both, and the mode
 * events.
 *
 * IDENTIFICATION
 *		src/core/availability.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

/* beat at most this often */
#define HEARTBEAT_INTERVAL_US	(900 * 1000)
/* the first beat of a process: a gap longer than this is an incident */
#define FIRST_GAP_US			(1000 * 1000)

static TimestampTz last_beat = 0;
static int32 last_epoch = 0;

/* The longest gap between heartbeats that is not an incident. */
int64
hs_heartbeat_gap_usec(void)
{
	return Max((int64) 5 * USECS_PER_SEC, (int64) 3 * hs_scheduler_naptime * 1000);
}

bool
hs_heartbeat_due(void)
{
	return GetCurrentTimestamp() - last_beat >= HEARTBEAT_INTERVAL_US;
}

/* Make the current transaction commit asynchronously (synchronous_commit off). */
void
hs_commit_async(void)
{
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Beat: in a transaction of the caller's (the scheduler's, committed
 * asynchronously: hs_commit_async), connected to SPI.
 */
void
hs_heartbeat(int32 epoch)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;
	bool		prev_null;
	Datum		prev;
	TimestampTz now;
	int64		allowed;

	hs_plan(&plan, "UPDATE hasched.epoch e SET last_round_at = clock_timestamp()"
			" FROM (SELECT last_round_at FROM hasched.epoch WHERE epoch = $1) p"
			" WHERE e.epoch = $1 RETURNING p.last_round_at, e.last_round_at",
			1, INT4OID);
	if (SPI_execute_plan(plan, (Datum[]) {Int32GetDatum(epoch)}, NULL, false, 1) !=
		SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "hasched: writing the heartbeat failed");
	if (SPI_processed != 1)
		return;
	prev = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &prev_null);
	now = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	allowed = (last_epoch == epoch) ? hs_heartbeat_gap_usec() : FIRST_GAP_US;
	/* the first beat of an epoch has nothing before it */
	if (!prev_null && now - DatumGetTimestampTz(prev) > allowed)
	{
		char	   *from = quote_literal_cstr(timestamptz_to_str(DatumGetTimestampTz(prev)));
		char	   *until = quote_literal_cstr(timestamptz_to_str(now));
		char	   *sql;

		sql = psprintf("INSERT INTO hasched.event (kind, detail) VALUES ('scheduler_down',"
					   " jsonb_build_object('from', %s::timestamptz, 'until', %s::timestamptz,"
					   " 'seconds', %.3f, 'epoch', %d, 'cause', %s))",
					   from, until, (double) (now - DatumGetTimestampTz(prev)) / USECS_PER_SEC,
					   epoch,
					   quote_literal_cstr(last_epoch == epoch ?
										  "no scheduler round for longer than the allowed gap" :
										  "the scheduler or the server was down (restart)"));
		if (SPI_execute(sql, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hasched: writing the scheduler_down event failed");
		ereport(LOG,
				(errmsg("hasched: no scheduler round from %s to %s in epoch %d: recorded as downtime",
						timestamptz_to_str(DatumGetTimestampTz(prev)), timestamptz_to_str(now), epoch)));
	}
	last_beat = GetCurrentTimestamp();
	last_epoch = epoch;
}
