/*-------------------------------------------------------------------------
 *
 * extension.c
 *		May the background workers act on the hasched of their database?
 *		The extension must be there, at the version this library was built
 *		for, and not in the middle of a restore.
 *
 * A new library (installed, server restarted) meets the schema of the old
 * version until ALTER EXTENSION hasched UPDATE runs; its statements would
 * fail on, or misread, tables of another shape, so the workers wait.  A
 * pg_restore without --single-transaction commits item by item: the workers
 * wait while one is connected to the database (application_name
 * pg_restore, its default), so they never act on a half-restored one (jobs
 * back before their epochs' or schedules' rows, sequences not yet set).
 * Each wait is logged once, when it begins, and the end of one.
 *
 * IDENTIFICATION
 *		src/core/extension.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/backend_status.h"

#include "core/hasched.h"

#ifndef HASCHED_VERSION
#error "HASCHED_VERSION must be defined (the Makefile takes it from hasched.control)"
#endif

typedef enum ExtensionWait
{
	WAIT_UNKNOWN = -1,			/* not looked yet */
	WAIT_NONE = 0,				/* usable */
	WAIT_CREATE,				/* no CREATE EXTENSION hasched yet */
	WAIT_UPDATE,				/* another version's schema */
	WAIT_RESTORE				/* a pg_restore is connected */
} ExtensionWait;

/* what this process last found (and logged) */
static ExtensionWait last_wait = WAIT_UNKNOWN;

/*
 * The pid of a session of pg_restore connected to this database (its
 * application_name), or 0.  Read from the backend status array, which the
 * transaction reads once: no SQL, as it runs every scheduler round.
 */
static int
restore_session_pid(void)
{
	int			n = pgstat_fetch_stat_numbackends();

	for (int i = 1; i <= n; i++)
	{
		LocalPgBackendStatus *local = pgstat_fetch_stat_local_beentry(i);
		PgBackendStatus *be;

		if (local == NULL)
			continue;
		be = &local->backendStatus;
		if (be->st_procpid != MyProcPid && be->st_databaseid == MyDatabaseId &&
			be->st_appname != NULL && strcmp(be->st_appname, "pg_restore") == 0)
			return be->st_procpid;
	}
	return 0;
}

/*
 * True when the workers may act on this database's hasched.  Runs inside
 * the caller's transaction, with SPI connected.
 */
bool
hs_extension_usable(void)
{
	ExtensionWait wait;
	char	   *version = NULL;
	int			restore_pid = 0;

	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'hasched'",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading pg_extension failed");
	if (SPI_processed == 0)
		wait = WAIT_CREATE;
	else
	{
		version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (version == NULL || strcmp(version, HASCHED_VERSION) != 0)
			wait = WAIT_UPDATE;
		else
		{
			restore_pid = restore_session_pid();
			wait = restore_pid != 0 ? WAIT_RESTORE : WAIT_NONE;
		}
	}

	if (wait == last_wait)
		return wait == WAIT_NONE;

	switch (wait)
	{
		case WAIT_CREATE:
			ereport(LOG,
					(errmsg("hasched: waiting for CREATE EXTENSION hasched in database \"%s\"",
							hs_database)));
			break;
		case WAIT_UPDATE:
			ereport(LOG,
					(errmsg("hasched: waiting for ALTER EXTENSION hasched UPDATE in database \"%s\": its hasched schema is version %s, this library is version %s",
							hs_database, version ? version : "(none)", HASCHED_VERSION)));
			break;
		case WAIT_RESTORE:
			ereport(LOG,
					(errmsg("hasched: waiting for the restore into database \"%s\" to finish (pg_restore, pid %d)",
							hs_database, restore_pid)));
			break;
		case WAIT_NONE:
			if (last_wait != WAIT_UNKNOWN)
				ereport(LOG,
						(errmsg("hasched: extension hasched %s in database \"%s\" is ready",
								HASCHED_VERSION, hs_database)));
			break;
		case WAIT_UNKNOWN:
			break;
	}
	last_wait = wait;
	return wait == WAIT_NONE;
}
