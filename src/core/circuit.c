/*-------------------------------------------------------------------------
 *
 * circuit.c
 *		Circuit breakers in shared memory (one per RabbitMQ broker and one
 *		per amqp queue), and the dispatcher's status for health: what
 *		hasched.circuits and hasched.health() show.
 *
 * A circuit counts calls and failures over a sliding window
 * (hasched.circuit_window, in ten buckets).  CLOSED lets every call
 * through; when at least hasched.circuit_min_calls calls were made in the
 * window and more than hasched.circuit_failure_percent of them failed, it
 * OPENs: calls fail fast (the dispatcher does not try the broker, or leaves
 * the queue's jobs pending).  After hasched.circuit_open_duration it is
 * HALF_OPEN: one call, the probe, goes through; its success closes the
 * circuit (with an empty window), its failure opens it again.
 *
 * Only the dispatcher calls and records; everyone reads.  Every transition
 * is logged at once and kept in this process's memory until
 * hs_circuit_write_events() writes it as a row of hasched.event (kind
 * 'circuit') in the caller's transaction.
 *
 * IDENTIFICATION
 *		src/core/circuit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

#define BUCKETS		10

typedef struct HsCircuit
{
	char		name[HS_CIRCUIT_NAME_MAX];
	int			kind;			/* HS_CIRCUIT_BROKER or HS_CIRCUIT_QUEUE */
	int			state;			/* HS_CIRCUIT_CLOSED, _OPEN, _HALF_OPEN */
	TimestampTz since;			/* of the current state */
	bool		probing;		/* half open: the probe is out */
	int64		bucket_no[BUCKETS];
	int32		calls[BUCKETS];
	int32		failures[BUCKETS];
	int64		total_calls;
	int64		total_failures;
	char		last_error[HS_CIRCUIT_ERROR_MAX];
} HsCircuit;

typedef struct HsCircuitShared
{
	slock_t		mutex;
	int			n;
	HsCircuit	circuits[HS_MAX_CIRCUITS];
	/* the dispatcher's status */
	pid_t		dispatcher_pid;
	Latch	   *dispatcher_latch;
	char		dispatcher_status[32];
	char		dispatcher_detail[512];
	int64		dispatched;		/* jobs dispatched since the server started */
	int64		publish_failures;
	TimestampTz last_dispatch;
} HsCircuitShared;

static HsCircuitShared *cshared = NULL;

static const char *const state_names[] = {"closed", "open", "half_open"};
static const char *const kind_names[] = {"broker", "queue"};

/* transitions not yet written as events (this process only) */
typedef struct Transition
{
	int			kind;
	int			from;
	int			to;
	char		name[HS_CIRCUIT_NAME_MAX];
	char		reason[HS_CIRCUIT_ERROR_MAX];
	TimestampTz at;
} Transition;

#define MAX_PENDING	64
static Transition pending[MAX_PENDING];
static int	npending = 0;

Size
hs_circuit_shmem_size(void)
{
	return sizeof(HsCircuitShared);
}

void
hs_circuit_shmem_init(void)
{
	bool		found;

	cshared = ShmemInitStruct("hasched circuits", sizeof(HsCircuitShared), &found);
	if (!found)
	{
		memset(cshared, 0, sizeof(HsCircuitShared));
		SpinLockInit(&cshared->mutex);
	}
}

const char *
hs_circuit_state_name(int state)
{
	return state_names[state];
}

const char *
hs_circuit_kind_name(int kind)
{
	return kind_names[kind];
}

/*
 * The circuit of (kind, name), created closed when new; -1 when the table
 * is full (then the caller goes without a breaker for it).
 */
int
hs_circuit_get(int kind, const char *name)
{
	int			idx = -1;

	SpinLockAcquire(&cshared->mutex);
	for (int i = 0; i < cshared->n; i++)
		if (cshared->circuits[i].kind == kind &&
			strcmp(cshared->circuits[i].name, name) == 0)
		{
			idx = i;
			break;
		}
	if (idx < 0 && cshared->n < HS_MAX_CIRCUITS)
	{
		HsCircuit  *c = &cshared->circuits[cshared->n];

		memset(c, 0, sizeof(HsCircuit));
		strlcpy(c->name, name, sizeof(c->name));
		c->kind = kind;
		c->state = HS_CIRCUIT_CLOSED;
		c->since = GetCurrentTimestamp();
		idx = cshared->n++;
	}
	SpinLockRelease(&cshared->mutex);
	return idx;
}

/* under the mutex: the change, logged and kept for its event */
static void
transition(HsCircuit *c, int to, TimestampTz now, const char *reason)
{
	if (npending < MAX_PENDING)
	{
		Transition *t = &pending[npending++];

		t->kind = c->kind;
		t->from = c->state;
		t->to = to;
		strlcpy(t->name, c->name, sizeof(t->name));
		strlcpy(t->reason, reason, sizeof(t->reason));
		t->at = now;
	}
	c->state = to;
	c->since = now;
	c->probing = false;
	if (to == HS_CIRCUIT_CLOSED)
	{
		memset(c->bucket_no, 0, sizeof(c->bucket_no));
		memset(c->calls, 0, sizeof(c->calls));
		memset(c->failures, 0, sizeof(c->failures));
	}
}

/* the log lines of the transitions kept since the last call */
static int	logged = 0;

static void
log_transitions(void)
{
	for (; logged < npending; logged++)
	{
		Transition *t = &pending[logged];

		ereport(t->to == HS_CIRCUIT_OPEN ? WARNING : LOG,
				(errmsg("hasched: circuit of %s \"%s\" is %s (was %s)",
						kind_names[t->kind], t->name, state_names[t->to],
						state_names[t->from]),
				 t->reason[0] ? errdetail_internal("%s", t->reason) : 0));
	}
}

/*
 * May a call go through the circuit now?  Closed: yes.  Open: no, until
 * hasched.circuit_open_duration has passed; then it is half open and this
 * call is its probe.  Half open with the probe out: no.
 */
bool
hs_circuit_allow(int idx)
{
	HsCircuit  *c;
	bool		ok;
	TimestampTz now = GetCurrentTimestamp();

	if (idx < 0)
		return true;
	c = &cshared->circuits[idx];
	SpinLockAcquire(&cshared->mutex);
	if (c->state == HS_CIRCUIT_OPEN &&
		now - c->since >= (int64) hs_circuit_open_duration * 1000)
		transition(c, HS_CIRCUIT_HALF_OPEN, now, "open for hasched.circuit_open_duration: one probe goes through");
	if (c->state == HS_CIRCUIT_CLOSED)
		ok = true;
	else if (c->state == HS_CIRCUIT_HALF_OPEN && !c->probing)
		ok = c->probing = true;
	else
		ok = false;
	SpinLockRelease(&cshared->mutex);
	log_transitions();
	return ok;
}

/* A probe taken by hs_circuit_allow() that was not made: the next may go. */
void
hs_circuit_release_probe(int idx)
{
	if (idx < 0)
		return;
	SpinLockAcquire(&cshared->mutex);
	cshared->circuits[idx].probing = false;
	SpinLockRelease(&cshared->mutex);
}

/* Is the circuit open or half open (without taking a probe)? */
bool
hs_circuit_is_closed(int idx)
{
	bool		closed;

	if (idx < 0)
		return true;
	SpinLockAcquire(&cshared->mutex);
	closed = cshared->circuits[idx].state == HS_CIRCUIT_CLOSED;
	SpinLockRelease(&cshared->mutex);
	return closed;
}

/*
 * Record the outcome of a call that went through.  Half open: the probe's
 * outcome closes or reopens the circuit.  Closed: counted in the window,
 * which may open it.
 */
void
hs_circuit_record(int idx, bool success, const char *error)
{
	HsCircuit  *c;
	TimestampTz now = GetCurrentTimestamp();
	int64		width = Max((int64) hs_circuit_window * 1000 / BUCKETS, 1);
	int64		no = now / width;
	int			b = (int) (no % BUCKETS);
	char		reason[HS_CIRCUIT_ERROR_MAX];

	if (idx < 0)
		return;
	c = &cshared->circuits[idx];
	SpinLockAcquire(&cshared->mutex);
	c->total_calls++;
	if (!success)
	{
		c->total_failures++;
		if (error)
			strlcpy(c->last_error, error, sizeof(c->last_error));
	}
	if (c->state == HS_CIRCUIT_HALF_OPEN)
	{
		if (success)
			transition(c, HS_CIRCUIT_CLOSED, now, "the probe succeeded");
		else
		{
			snprintf(reason, sizeof(reason), "the probe failed: %s", error ? error : "error");
			transition(c, HS_CIRCUIT_OPEN, now, reason);
		}
	}
	else if (c->state == HS_CIRCUIT_CLOSED)
	{
		int64		calls = 0;
		int64		failures = 0;

		if (c->bucket_no[b] != no)
		{
			c->bucket_no[b] = no;
			c->calls[b] = c->failures[b] = 0;
		}
		c->calls[b]++;
		if (!success)
			c->failures[b]++;
		for (int i = 0; i < BUCKETS; i++)
			if (c->bucket_no[i] > no - BUCKETS)
			{
				calls += c->calls[i];
				failures += c->failures[i];
			}
		if (!success && calls >= hs_circuit_min_calls &&
			failures * 100 > (int64) hs_circuit_failure_percent * calls)
		{
			snprintf(reason, sizeof(reason),
					 "%lld of %lld calls failed within hasched.circuit_window; last: %s",
					 (long long) failures, (long long) calls, error ? error : "error");
			transition(c, HS_CIRCUIT_OPEN, now, reason);
		}
	}
	SpinLockRelease(&cshared->mutex);
	log_transitions();
}

/*
 * Write the transitions kept since the last call as rows of hasched.event
 * (kind 'circuit'), inside the caller's transaction (SPI, as the owner).
 */
void
hs_circuit_write_events(void)
{
	static SPIPlanPtr plan = NULL;

	if (npending == 0)
		return;
	hs_plan(&plan, "INSERT INTO hasched.event (at, kind, detail) VALUES ($6, 'circuit',"
			" jsonb_build_object('circuit', $1, 'kind', $2, 'from', $3, 'to', $4,"
			" 'reason', $5))",
			6, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID);
	for (int i = 0; i < npending; i++)
	{
		Transition *t = &pending[i];
		Datum		values[6];

		values[0] = CStringGetTextDatum(t->name);
		values[1] = CStringGetTextDatum(kind_names[t->kind]);
		values[2] = CStringGetTextDatum(state_names[t->from]);
		values[3] = CStringGetTextDatum(state_names[t->to]);
		values[4] = CStringGetTextDatum(t->reason);
		values[5] = TimestampTzGetDatum(t->at);
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hasched: recording a circuit event failed");
	}
	npending = 0;
	logged = 0;
}

/* Are transitions waiting for hs_circuit_write_events()? */
bool
hs_circuit_events_pending(void)
{
	return npending > 0;
}

/* A copy of every circuit, for hasched.circuits; returns how many. */
int
hs_circuit_snapshot(HsCircuitInfo *out, int max)
{
	int			n;
	TimestampTz now = GetCurrentTimestamp();
	int64		width = Max((int64) hs_circuit_window * 1000 / BUCKETS, 1);
	int64		no = now / width;

	SpinLockAcquire(&cshared->mutex);
	n = Min(cshared->n, max);
	for (int i = 0; i < n; i++)
	{
		HsCircuit  *c = &cshared->circuits[i];
		HsCircuitInfo *o = &out[i];

		strlcpy(o->name, c->name, sizeof(o->name));
		o->kind = c->kind;
		o->state = c->state;
		o->since = c->since;
		o->window_calls = o->window_failures = 0;
		if (c->state == HS_CIRCUIT_CLOSED)
			for (int b = 0; b < BUCKETS; b++)
				if (c->bucket_no[b] > no - BUCKETS)
				{
					o->window_calls += c->calls[b];
					o->window_failures += c->failures[b];
				}
		o->total_calls = c->total_calls;
		o->total_failures = c->total_failures;
		strlcpy(o->last_error, c->last_error, sizeof(o->last_error));
	}
	SpinLockRelease(&cshared->mutex);
	return n;
}

/* ------------------------------------------------------------------------
 * The dispatcher's status, for health
 * ------------------------------------------------------------------------ */

/* status: a short word (ok, connecting, no broker, ...); detail: a sentence */
void
hs_dispatcher_set_status(pid_t pid, const char *status, const char *detail)
{
	SpinLockAcquire(&cshared->mutex);
	cshared->dispatcher_pid = pid;
	strlcpy(cshared->dispatcher_status, status, sizeof(cshared->dispatcher_status));
	strlcpy(cshared->dispatcher_detail, detail ? detail : "", sizeof(cshared->dispatcher_detail));
	SpinLockRelease(&cshared->mutex);
}

/* The dispatcher's latch (NULL when it exits), set by commits of due jobs. */
void
hs_dispatcher_attach(Latch *latch)
{
	SpinLockAcquire(&cshared->mutex);
	cshared->dispatcher_latch = latch;
	SpinLockRelease(&cshared->mutex);
}

void
hs_dispatcher_wake(void)
{
	Latch	   *latch;

	if (cshared == NULL)
		return;
	SpinLockAcquire(&cshared->mutex);
	latch = cshared->dispatcher_latch;
	SpinLockRelease(&cshared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

void
hs_dispatcher_count(int64 dispatched, int64 failed)
{
	SpinLockAcquire(&cshared->mutex);
	cshared->dispatched += dispatched;
	cshared->publish_failures += failed;
	if (dispatched > 0)
		cshared->last_dispatch = GetCurrentTimestamp();
	SpinLockRelease(&cshared->mutex);
}

/*
 * health() rows of the dispatcher and the circuits, when hasched.amqp_url
 * is set: appended at rows[*n].
 */
void
hs_circuit_health(HsHealthRow *rows, int *n, bool standby)
{
	HsCircuitShared snap;
	StringInfoData open;
	int			nopen = 0;

	if (hs_amqp_url == NULL || hs_amqp_url[0] == '\0')
		return;
	SpinLockAcquire(&cshared->mutex);
	memcpy(&snap, cshared, sizeof(HsCircuitShared));
	SpinLockRelease(&cshared->mutex);

	rows[*n].component = "dispatcher";
	if (standby)
	{
		rows[*n].status = "standby";
		rows[*n].healthy = true;
		rows[*n].detail = pstrdup("the dispatcher runs on the primary only");
	}
	else if (snap.dispatcher_pid == 0)
	{
		rows[*n].status = "down";
		rows[*n].healthy = false;
		rows[*n].detail = pstrdup(snap.dispatcher_detail[0] ? snap.dispatcher_detail :
								  "not running (it starts at server start when hasched.amqp_url is set)");
	}
	else
	{
		rows[*n].status = pstrdup(snap.dispatcher_status);
		rows[*n].healthy = strcmp(snap.dispatcher_status, "ok") == 0 ||
			strcmp(snap.dispatcher_status, "fenced") == 0;
		rows[*n].detail = psprintf("%s; pid %d, %lld jobs dispatched, %lld failed publishes%s%s",
								   snap.dispatcher_detail, snap.dispatcher_pid,
								   (long long) snap.dispatched, (long long) snap.publish_failures,
								   snap.last_dispatch ? ", last at " : "",
								   snap.last_dispatch ? timestamptz_to_str(snap.last_dispatch) : "");
	}
	(*n)++;

	initStringInfo(&open);
	for (int i = 0; i < snap.n; i++)
	{
		HsCircuit  *c = &snap.circuits[i];

		if (c->state == HS_CIRCUIT_CLOSED)
			continue;
		appendStringInfo(&open, "%s%s %s %s since %s (%s)", nopen ? "; " : "",
						 kind_names[c->kind], c->name, state_names[c->state],
						 timestamptz_to_str(c->since), c->last_error);
		nopen++;
	}
	rows[*n].component = "circuits";
	rows[*n].status = nopen ? "open" : "ok";
	rows[*n].healthy = nopen == 0;
	rows[*n].detail = nopen ? open.data :
		psprintf("%d circuits, all closed", snap.n);
	(*n)++;
}
