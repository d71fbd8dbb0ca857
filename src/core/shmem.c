/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		hasched's shared memory: the HaschedShared struct (the scheduler's
 *		state and the writer registry), the executor slots, and the hooks
 *		that size and create them together with the claim cursor,
 *		rate-limit and pull listener hash tables and the metrics
 *		(metrics.c).
 *
 * hasched must be in shared_preload_libraries: all of it is sized at
 * postmaster start.
 *
 * IDENTIFICATION
 *		src/core/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/twophase.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"

#include "core/hasched.h"

HaschedShared *hs_shared = NULL;
HsExecutorSlot *hs_executors = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
executor_shmem_size(void)
{
	return mul_size(sizeof(HsExecutorSlot), Max(hs_max_executors, 1));
}

static int
writer_slot_count(void)
{
	/* every PGPROC that can run a transaction, prepared ones included */
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static Size
shared_struct_size(void)
{
	return add_size(offsetof(HaschedShared, writer_since),
					mul_size(sizeof(pg_atomic_uint64), writer_slot_count()));
}

static void
hasched_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(add_size(add_size(shared_struct_size(),
											 executor_shmem_size()),
									add_size(add_size(hs_cursor_shmem_size(),
													  hs_bucket_shmem_size()),
											 hs_listen_shmem_size())));
	RequestAddinShmemSpace(hs_fencing_shmem_size());
	RequestAddinShmemSpace(hs_degrade_shmem_size());
	RequestAddinShmemSpace(hs_circuit_shmem_size());
	RequestAddinShmemSpace(hs_metrics_shmem_size());
	RequestNamedLWLockTranche("hasched", 3);
}

static void
hasched_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	hs_shared = ShmemInitStruct("hasched", shared_struct_size(), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("hasched");

		hs_shared->cursor_lock = &locks[0].lock;
		hs_shared->bucket_lock = &locks[1].lock;
		hs_shared->listen_lock = &locks[2].lock;
		pg_atomic_init_u32(&hs_shared->pull_listeners, 0);
		pg_atomic_init_u32(&hs_shared->notify_pending, 0);
		pg_atomic_init_u32(&hs_shared->round_requested, 0);
		SpinLockInit(&hs_shared->mutex);
		hs_shared->scheduler_role = HS_ROLE_DOWN;
		hs_shared->n_writer_slots = writer_slot_count();
		for (int i = 0; i < hs_shared->n_writer_slots; i++)
			pg_atomic_init_u64(&hs_shared->writer_since[i], 0);
		pg_atomic_init_u32(&hs_shared->cancel_next, 0);
		for (int i = 0; i < HS_CANCEL_RING; i++)
			pg_atomic_init_u64(&hs_shared->cancelled[i], 0);
	}

	hs_executors = ShmemInitStruct("hasched executors", executor_shmem_size(), &found);
	if (!found)
	{
		memset(hs_executors, 0, executor_shmem_size());
		for (int i = 0; i < Max(hs_max_executors, 1); i++)
			pg_atomic_init_u64(&hs_executors[i].stop_job_id, 0);
	}

	hs_cursor_shmem_init();
	hs_bucket_shmem_init();
	hs_listen_shmem_init();
	hs_fencing_shmem_init();
	hs_degrade_shmem_init();
	hs_circuit_shmem_init();
	hs_metrics_shmem_init();

	LWLockRelease(AddinShmemInitLock);
}

/*
 * A shared hash table keyed by a NUL-terminated string of keysize bytes,
 * sized for max entries (hash_estimate_size(max, entrysize) must have been
 * requested).  Called from the startup hook, under AddinShmemInitLock.
 */
HTAB *
hs_shmem_hash(const char *name, long max, Size keysize, Size entrysize)
{
	HASHCTL		info;

	memset(&info, 0, sizeof(info));
	info.keysize = keysize;
	info.entrysize = entrysize;
	return ShmemInitHash(name, max, max, &info, HASH_ELEM | HASH_STRINGS);
}

/*
 * The entry for key in a shared hash made by hs_shmem_hash, entered if
 * missing (*found says which).  The table never holds more than max
 * entries, so that it never takes shared memory the lock tables rely on: to
 * make room, the entry whose last_used() is smallest is dropped first.
 * NULL only when shared memory ran out.  The caller holds the table's lock
 * exclusively.
 */
void *
hs_shmem_hash_enter(HTAB *h, const char *key, long max,
					int64 (*last_used) (const void *entry), bool *found)
{
	void	   *e = hash_search(h, key, HASH_FIND, NULL);

	if (e != NULL)
	{
		*found = true;
		return e;
	}
	if (hash_get_num_entries(h) >= max)
	{
		HASH_SEQ_STATUS status;
		void	   *victim = NULL;

		hash_seq_init(&status, h);
		while ((e = hash_seq_search(&status)) != NULL)
			if (victim == NULL || last_used(e) < last_used(victim))
				victim = e;
		/* an entry starts with its key */
		if (victim != NULL)
			hash_search(h, victim, HASH_REMOVE, NULL);
	}
	return hash_search(h, key, HASH_ENTER_NULL, found);
}

/* Install the shared memory hooks; called once, from _PG_init. */
void
hs_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = hasched_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = hasched_shmem_startup;
}
