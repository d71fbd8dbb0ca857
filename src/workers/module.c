/*-------------------------------------------------------------------------
 *
 * module.c
 *		The module's entry: _PG_init, which refuses to load outside
 *		shared_preload_libraries, defines the settings, installs the shared
 *		memory hooks and the transaction callbacks, and registers the
 *		scheduler (and the health listener when hasched.health_port is set,
 *		the ZooKeeper coordinator when hasched.zookeeper is, the RabbitMQ
 *		dispatcher when hasched.amqp_url is).
 *
 * It lives in the workers' layer because it registers them; it reaches the
 * core through core/hasched.h only.
 *
 * IDENTIFICATION
 *		src/workers/module.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "workers/worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("hasched must be loaded via shared_preload_libraries"),
				 errhint("Add hasched to shared_preload_libraries in postgresql.conf and restart the server.")));

	hs_define_settings();
	hs_shmem_install_hooks();
	hs_xact_callbacks_init();
	/*
	 * pg_upgrade (binary upgrade mode) drops and recreates every database:
	 * no hasched worker may run then, let alone hold hasched.database open
	 */
	if (IsBinaryUpgrade)
		return;
	hs_register_scheduler();
	if (hs_health_port > 0)
		hs_register_health_listener();
	if (hs_zookeeper_enabled())
		hs_register_coordinator();
	if (hs_amqp_url != NULL && hs_amqp_url[0] != '\0')
		hs_register_dispatcher();
}
