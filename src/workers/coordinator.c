/*-------------------------------------------------------------------------
 *
 * coordinator.c
 *		The ZooKeeper coordinator: a background worker, on every server when
 *		hasched.zookeeper is set, that holds a ZooKeeper session, runs the
 *		election of the one server allowed to act, and watches the
 *		ephemeral znodes of external workers.
 *
 * It uses ZooKeeper's single-threaded C client: the client's socket is in
 * the shared loop's wait set (sockets()/socket_ready()), and
 * zookeeper_process() runs at the start of each round, so every completion
 * and watcher runs in this process's one thread.  Those callbacks only copy
 * their answer into memory (malloc, never palloc or ereport inside the
 * client); the round reads it.  The coordinator has no database connection:
 * a busy or locked database cannot keep it from answering ZooKeeper, and it
 * publishes everything through shared memory (src/core/fencing.c), where
 * the gate hs_node_may_act() reads it.
 *
 * Znodes, under hasched.zookeeper_path (the root, its data a marker that
 * says it is hasched's):
 *		election/n_<server>_<session>_<sequence>	ephemeral sequential, one
 *			per primary in the election; data: who it is
 *		workers/<worker name>	ephemeral, one per live external worker
 *			(hasched-worker --zookeeper); the name percent-encoded
 *
 * The election is ZooKeeper's recipe: each primary creates its ephemeral
 * sequential znode; the lowest sequence leads; the others each watch only
 * the znode just before their own, and look again when it goes.  After a
 * connection loss during the create, the coordinator first looks for a
 * znode of its own session before it creates another.  On each new session
 * (a standby's too) the coordinator deletes the znodes left by this same
 * server's earlier coordinators or postmasters whose sessions have not
 * expired yet, when it can prove them its own (is_previous_incarnation), so
 * that a restarted coordinator or PostgreSQL does not wait for the old
 * session to expire.  The
 * leader's sequence number is its fencing token (fencing.c, and the
 * scheduler's epoch).  Only primaries take part: a standby holds a session
 * and waits; when it is promoted it joins the election and leads once the
 * servers before it are gone.
 *
 * The leader's clock: every answered request moves its deadline to the
 * request's send time + session timeout - margin (fencing.c).  The
 * coordinator sends a probe (exists on its own znode) every probe interval
 * (a sixth of the session timeout, at most 500 ms), and wakes when the
 * deadline comes, to stop the executors' running jobs.
 *
 * Session expiry: the gate closes, the handle is closed, a new session
 * starts and the election begins again.  Bad configuration (a malformed
 * connection string, a root path that holds foreign data or that ZooKeeper
 * refuses to let us write, a session timeout the ensemble does not grant)
 * is reported in the log and in health(), and the server does not act;
 * setup is tried again every ERROR_RETRY_MS.
 *
 * IDENTIFICATION
 *		src/workers/coordinator.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "access/xlog.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "postmaster/bgworker.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "workers/worker.h"

#define ELECTION_DIR	"election"
#define WORKERS_DIR		"workers"
#define ROOT_MARK		"hasched coordination root, version 1"
#define ERROR_RETRY_MS	10000
#define CLOSE_DRAIN_MS	2000
#define SEQ_DIGITS		10
#define STANDBY_POLL_MS	100

/* ------------------------------------------------------------------------
 * Asynchronous requests: one outstanding per channel
 * ------------------------------------------------------------------------ */

typedef enum Channel
{
	CH_MAIN,					/* setup and election, one step at a time */
	CH_PROBE,					/* keeps the leader's deadline ahead */
	CH_WORKERS,					/* the workers' znodes */
	N_CHANNELS
} Channel;

typedef struct Op
{
	bool		busy;			/* sent, no answer yet */
	bool		done;			/* answered, not read yet */
	int			rc;
	int64		sent;			/* hs_clock_usec() when sent */
	char	   *value;			/* get: the data; create: the path (malloc) */
	int			version;		/* get: the znode's data version */
	int			nchildren;
	char	  **children;		/* get_children (malloc) */
} Op;

typedef struct Tag
{
	int			channel;
	uint64		generation;
} Tag;

static zhandle_t *zh = NULL;
static uint64 generation = 0;	/* bumped with each handle; older answers are dropped */
static Op	ops[N_CHANNELS];
static int	zk_fd = -1;
static int	zk_interest = 0;
static int	pending_events = 0;

/* set by watchers, read by the round */
static bool pred_changed = false;
static bool workers_changed = false;

/* the client library's last complaint (its log callback) */
static char client_message[HS_ZK_INFO_MAX] = "";

static void
op_clear(Op *op)
{
	free(op->value);
	for (int i = 0; i < op->nchildren; i++)
		free(op->children[i]);
	free(op->children);
	memset(op, 0, sizeof(Op));
}

static Tag *
op_start(int ch)
{
	Tag		   *tag = malloc(sizeof(Tag));

	if (tag == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	op_clear(&ops[ch]);
	tag->channel = ch;
	tag->generation = generation;
	ops[ch].busy = true;
	ops[ch].sent = hs_clock_usec();
	return tag;
}

/* After a zoo_a* call: a request that was not sent is answered at once. */
static void
op_sent(Tag *tag, int rc)
{
	if (rc == ZOK)
		return;
	ops[tag->channel].busy = false;
	ops[tag->channel].done = true;
	ops[tag->channel].rc = rc;
	free(tag);
}

static Op *
op_finish(const void *data, int rc)
{
	Tag		   *tag = (Tag *) data;
	Op		   *op = NULL;

	if (tag->generation == generation)
	{
		op = &ops[tag->channel];
		op->busy = false;
		op->done = true;
		op->rc = rc;
	}
	free(tag);
	return op;
}

/* Take the answer of a channel, if there is one. */
static bool
op_take(int ch, int *rc)
{
	if (!ops[ch].done)
		return false;
	ops[ch].done = false;
	*rc = ops[ch].rc;
	return true;
}

static void
on_void(int rc, const void *data)
{
	(void) op_finish(data, rc);
}

static void
on_stat(int rc, const struct Stat *stat, const void *data)
{
	Op		   *op = op_finish(data, rc);

	if (op && rc == ZOK && stat)
		op->version = stat->version;
}

static void
on_string(int rc, const char *value, const void *data)
{
	Op		   *op = op_finish(data, rc);

	if (op && rc == ZOK && value)
		op->value = strdup(value);
}

static void
on_data(int rc, const char *value, int len, const struct Stat *stat, const void *data)
{
	Op		   *op = op_finish(data, rc);

	if (op && rc == ZOK)
	{
		op->value = malloc(Max(len, 0) + 1);
		if (op->value)
		{
			if (len > 0)
				memcpy(op->value, value, len);
			op->value[Max(len, 0)] = '\0';
		}
		if (stat)
			op->version = stat->version;
	}
}

static void
on_children(int rc, const struct String_vector *sv, const void *data)
{
	Op		   *op = op_finish(data, rc);

	if (op && rc == ZOK && sv && sv->count > 0)
	{
		op->children = malloc(sizeof(char *) * sv->count);
		if (op->children)
			for (int i = 0; i < sv->count; i++)
				if ((op->children[op->nchildren] = strdup(sv->data[i])) != NULL)
					op->nchildren++;
	}
}

static void
session_watcher(zhandle_t *h, int type, int state, const char *path, void *ctx)
{
	/* the round reads zoo_state(); nothing to do here */
}

static void
pred_watcher(zhandle_t *h, int type, int state, const char *path, void *ctx)
{
	pred_changed = true;
}

static void
workers_watcher(zhandle_t *h, int type, int state, const char *path, void *ctx)
{
	workers_changed = true;
}

/* The client's log lines: keep the message part of the last one. */
static void
client_log(const char *message)
{
	const char *p = strstr(message, "ZOO_");

	p = p ? strstr(p, ": ") : NULL;
	strlcpy(client_message, p ? p + 2 : message, sizeof(client_message));
}

/* ------------------------------------------------------------------------
 * Who this server is
 * ------------------------------------------------------------------------ */

static char *identity_key = NULL;	/* host, port, data directory, postmaster start */
static char *identity = NULL;	/* the election znode's data (see make_identity) */
static char *place_prefix = NULL;	/* "host=... started=": any postmaster here */
static char *place_suffix = NULL;	/* " boot=... dir=...": this boot, this directory */
static bool place_known = false;	/* boot id and directory identity read */
static char id_hash[17];
static char *root = NULL;		/* hasched.zookeeper_path */
static char *election_dir = NULL;
static char *workers_dir = NULL;

/* The running kernel's boot id (Linux), or "" when there is none. */
static void
read_boot_id(char *out, size_t outlen)
{
	FILE	   *f = fopen("/proc/sys/kernel/random/boot_id", "r");
	size_t		n = 0;

	out[0] = '\0';
	if (f == NULL)
		return;
	if (fgets(out, outlen, f) == NULL)
		out[0] = '\0';
	fclose(f);
	/* keep hex digits and dashes only: it goes into a space-separated line */
	for (char *p = out; *p; p++)
		if (isxdigit((unsigned char) *p) || *p == '-')
			out[n++] = *p;
	out[n] = '\0';
}

/*
 * Who this server is, written into its election znode:
 *
 *		host=H port=P data_directory=D started=S pid=N boot=B dir=DEV:INO
 *
 * S is the postmaster's start (PgStartTime, microseconds), B the kernel's
 * boot id and DEV:INO the data directory's device and inode.  Version 0.1.0
 * wrote the line up to pid=N and compares only up to "started=S " (its own
 * restarted coordinator); the fields after pid are new and it ignores them.
 * The znode's name carries a hash of everything but S and N, so that every
 * incarnation of this server in this boot of this host has the same name
 * prefix (see is_previous_incarnation).
 */
static void
make_identity(void)
{
	char		host[256];
	char		boot[64];
	char		dir[64] = "";
	struct stat st;
	char	   *place;
	uint64		h;

	if (gethostname(host, sizeof(host)) != 0)
		strlcpy(host, "unknown", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	read_boot_id(boot, sizeof(boot));
	if (stat(DataDir, &st) == 0)
		snprintf(dir, sizeof(dir), "%llu:%llu",
				 (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
	place_known = boot[0] != '\0' && dir[0] != '\0';
	place_prefix = MemoryContextStrdup(TopMemoryContext,
									   psprintf("host=%s port=%d data_directory=%s started=",
												host, PostPortNumber, DataDir));
	place_suffix = MemoryContextStrdup(TopMemoryContext,
									   psprintf(" boot=%s dir=%s", boot, dir));
	identity_key = MemoryContextStrdup(TopMemoryContext,
									   psprintf("%s%lld", place_prefix,
												(long long) PgStartTime));
	identity = MemoryContextStrdup(TopMemoryContext,
								   psprintf("%s pid=%d%s", identity_key, MyProcPid,
											place_suffix));
	place = psprintf("%s%s", place_prefix, place_suffix);
	h = hash_bytes_extended((const unsigned char *) place, strlen(place), 0);
	snprintf(id_hash, sizeof(id_hash), "%016llx", (unsigned long long) h);
}

typedef enum Incarnation
{
	INC_OTHER,					/* not provably this server's: leave it */
	INC_COORDINATOR,			/* an earlier coordinator of this postmaster */
	INC_POSTMASTER				/* a coordinator of an earlier postmaster */
} Incarnation;

/*
 * Is the election znode holding "data" one of this server's own, left by a
 * process that is gone?  Its session may still be alive in ZooKeeper (up to
 * the session timeout after the process died), and while it is, it stays
 * first in the election: deleting it lets this server lead at once instead
 * of after the session timeout.  Deleting the znode of a process that still
 * runs would let two servers act, so only what is provably dead is deleted:
 *
 * - the same postmaster (host, port, data directory and start time to the
 *   microsecond): a coordinator that this postmaster restarted (also after
 *   a crash of another process, when the postmaster waits for all its
 *   children to exit before it starts them again), or this one's own
 *   earlier session.  The postmaster starts one coordinator at a time and
 *   the previous one has exited before it starts the next.
 *
 * - an earlier postmaster (start time older than ours) on the same data
 *   directory, by the same kernel: the same boot id, and the same device and
 *   inode for the directory, not just the same path.  That postmaster is
 *   gone, and so is every process it started: PostgreSQL's interlock
 *   (postmaster.pid, and the shared memory segment whose id it records) lets
 *   a postmaster start on a data directory only when the previous postmaster
 *   is dead and no process of it is still attached to its shared memory, so
 *   its coordinator, scheduler and executors have all exited and cannot act
 *   any more.  This is the case after a restart in immediate mode, a
 *   postmaster killed and started again, or Patroni restarting PostgreSQL
 *   to demote it.
 *
 * The interlock holds only within one kernel.  A data directory copied (or
 * a volume moved, or a virtual machine cloned) to another host keeps its
 * path, and possibly its host name, port and even inode numbers, but not
 * the boot id, which the kernel draws at random at each boot: such a
 * server's znode is not this server's, and it is left to expire with its
 * session.  Containers on one host share the boot id but not their data
 * directories' device and inode (two mounted file systems never share a
 * device number in one kernel).  Left to expire too: the znode of a
 * postmaster of this host from before a reboot (its session has usually
 * expired by then anyway), a znode written by 0.1.0 (no boot id), a znode
 * with a start time newer than ours (the clock stepped back: waiting is
 * the safe side), and everything when the boot id or the directory's
 * identity cannot be read.
 */
static Incarnation
is_previous_incarnation(const char *data)
{
	size_t		plen = strlen(place_prefix);
	const char *p;
	char	   *end;
	long long	started;

	if (data == NULL || strncmp(data, place_prefix, plen) != 0)
		return INC_OTHER;
	p = data + plen;
	errno = 0;
	started = strtoll(p, &end, 10);
	if (end == p || errno != 0 || *end != ' ')
		return INC_OTHER;
	if (started == (long long) PgStartTime)
		return INC_COORDINATOR;
	if (!place_known || started > (long long) PgStartTime)
		return INC_OTHER;
	p = end;
	if (strncmp(p, " pid=", 5) != 0)
		return INC_OTHER;
	p += 5;
	if (!isdigit((unsigned char) *p))
		return INC_OTHER;
	while (isdigit((unsigned char) *p))
		p++;
	return strcmp(p, place_suffix) == 0 ? INC_POSTMASTER : INC_OTHER;
}

/* ------------------------------------------------------------------------
 * Checking the settings
 * ------------------------------------------------------------------------ */

/* hasched.zookeeper: host:port[,host:port...][/chroot]; NULL if good. */
static char *
check_connect_string(const char *s)
{
	const char *chroot = strchr(s, '/');
	char	   *hosts = pnstrdup(s, chroot ? chroot - s : strlen(s));
	char	   *save = NULL;
	int			n = 0;

	for (char *tok = strtok_r(hosts, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		char	   *colon = strrchr(tok, ':');
		char	   *end;
		long		port;

		n++;
		if (colon == NULL || colon == tok)
			return psprintf("\"%s\" is not host:port", tok);
		errno = 0;
		port = strtol(colon + 1, &end, 10);
		if (colon[1] == '\0' || *end != '\0' || errno != 0 || port < 1 || port > 65535)
			return psprintf("\"%s\" has no valid port (1 to 65535)", tok);
	}
	if (n == 0 || s[0] == ',' || (strlen(hosts) > 0 && hosts[strlen(hosts) - 1] == ',') ||
		strstr(hosts, ",,") != NULL)
		return pstrdup("it must list host:port pairs separated by commas");
	if (chroot && (strlen(chroot) < 2 || chroot[strlen(chroot) - 1] == '/' ||
				   strstr(chroot, "//") != NULL))
		return psprintf("the chroot suffix \"%s\" is not a znode path", chroot);
	return NULL;
}

/* hasched.zookeeper_path: an absolute znode path; NULL if good. */
static char *
check_path(const char *p)
{
	if (p[0] != '/' || strlen(p) < 2 || p[strlen(p) - 1] == '/' || strstr(p, "//") != NULL)
		return psprintf("hasched.zookeeper_path \"%s\" is not an absolute znode path (like /hasched)", p);
	if (strstr(p, "/./") || strstr(p, "/../") ||
		(strlen(p) >= 2 && strcmp(p + strlen(p) - 2, "/.") == 0) ||
		(strlen(p) >= 3 && strcmp(p + strlen(p) - 3, "/..") == 0))
		return psprintf("hasched.zookeeper_path \"%s\" has a . or .. component", p);
	if (strcmp(p, "/zookeeper") == 0 || strncmp(p, "/zookeeper/", 11) == 0)
		return psprintf("hasched.zookeeper_path \"%s\" is under /zookeeper, which ZooKeeper reserves", p);
	return NULL;
}

/* A configuration error, or NULL. */
static char *
config_error(void)
{
	char	   *e;

	if ((e = check_connect_string(hs_zookeeper)) != NULL)
		return psprintf("hasched.zookeeper = '%s' is malformed: %s", hs_zookeeper, e);
	if ((e = check_path(hs_zookeeper_path)) != NULL)
		return e;
	if (hs_zookeeper_fence_margin >= hs_zookeeper_session_timeout)
		return psprintf("hasched.zookeeper_fence_margin (%d ms) must be below hasched.zookeeper_session_timeout (%d ms)",
						hs_zookeeper_fence_margin, hs_zookeeper_session_timeout);
	return NULL;
}

/* ------------------------------------------------------------------------
 * The session
 * ------------------------------------------------------------------------ */

typedef enum Step
{
	S_ROOT_GET,					/* read the root */
	S_ROOT_PARENTS,				/* create the root's parents */
	S_ROOT_CREATE,				/* create the root, with the marker */
	S_ROOT_CHILDREN,			/* an empty root: is it free to take? */
	S_ROOT_MARK,				/* take it: write the marker */
	S_DIR_ELECTION,
	S_DIR_WORKERS,
	S_READY,					/* set up; a standby waits here */
	E_LIST,						/* look for our own znode, or stale ones */
	E_STALE_GET,
	E_STALE_DELETE,
	E_CREATE,
	E_CHECK,					/* who is first? */
	E_LEADER_GET,
	E_WATCH,					/* watch the predecessor */
	E_WAIT,
	E_LEADING,
	S_FAILED					/* an error; setup again at retry_at */
} Step;

static Step step = S_ROOT_GET;
static int	parent_index = 0;
static int	root_version = 0;
static char *own_node = NULL;	/* our election znode's name (TopMemoryContext) */
static char *stale_node = NULL;
static Incarnation stale_kind = INC_OTHER;
static List *not_stale = NIL;	/* znodes of this name prefix that are not ours */
static bool cleaned = false;	/* this session looked for stale znodes */
static char *pred_node = NULL;
static char *leader_node = NULL;
static char session_hex[17] = "";
static int64 session_id = 0;
static int	granted_timeout = 0;
static bool connected = false;
static bool setup_logged = false;
static int64 next_init = 0;		/* hs_clock_usec() of the next session attempt */
static int64 retry_at = 0;
static int64 next_probe = 0;
static bool probe_on_own = false;	/* the probe under way asks for our own znode */
static char error[HS_ZK_INFO_MAX] = "";
static char last_warned[HS_ZK_INFO_MAX] = "";
static bool was_leader = false;
static bool was_acting = false;

/* worker names seen at the last listing (malloc), sorted */
static char **worker_names = NULL;
static int	n_worker_names = 0;
static bool workers_listed = false;

static char *
set_str(char **dst, const char *src)
{
	if (*dst)
		pfree(*dst);
	*dst = src ? MemoryContextStrdup(TopMemoryContext, src) : NULL;
	return *dst;
}

static void
clear_workers(void)
{
	for (int i = 0; i < n_worker_names; i++)
		free(worker_names[i]);
	free(worker_names);
	worker_names = NULL;
	n_worker_names = 0;
	workers_listed = false;
}

/* Record an error (cannot lead), say it once in the log, retry later. */
static void fail(const char *fmt,...) pg_attribute_printf(1, 2);

static void
fail(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(error, sizeof(error), fmt, ap);
	va_end(ap);
	step = S_FAILED;
	retry_at = hs_clock_usec() + (int64) ERROR_RETRY_MS * 1000;
	if (strcmp(error, last_warned) != 0)
		ereport(WARNING,
				(errmsg("hasched coordinator: %s", error),
				 errdetail("This server does not schedule, run jobs or answer claims while it cannot lead; the coordinator tries again every %d seconds.",
						   ERROR_RETRY_MS / 1000),
				 errhint("Fix hasched.zookeeper, hasched.zookeeper_path or the ensemble's configuration; see hasched.health().")));
	strlcpy(last_warned, error, sizeof(last_warned));
}

static void
lose_leadership(const char *why)
{
	if (was_leader)
		ereport(LOG,
				(errmsg("hasched coordinator: not leading any more: %s", why)));
	was_leader = false;
	hs_fencing_set_leader(false, 0, 0, "");
	clear_workers();
}

static void
close_session(void)
{
	lose_leadership("the ZooKeeper session ended");
	if (zh)
		zookeeper_close(zh);
	zh = NULL;
	generation++;
	for (int i = 0; i < N_CHANNELS; i++)
		op_clear(&ops[i]);
	zk_fd = -1;
	zk_interest = 0;
	pending_events = 0;
	connected = false;
	session_id = 0;
	session_hex[0] = '\0';
	set_str(&own_node, NULL);
	set_str(&pred_node, NULL);
	set_str(&leader_node, NULL);
}

static void
open_session(void)
{
	char	   *e = config_error();

	if (e != NULL)
	{
		fail("%s", e);
		next_init = hs_clock_usec() + (int64) ERROR_RETRY_MS * 1000;
		return;
	}
	errno = 0;
	zh = zookeeper_init2(hs_zookeeper, session_watcher, hs_zookeeper_session_timeout,
						 NULL, NULL, 0, client_log);
	if (zh == NULL)
	{
		fail("could not start a ZooKeeper session with hasched.zookeeper = '%s': %s%s%s",
			 hs_zookeeper, errno ? strerror(errno) : "the client refused it",
			 client_message[0] ? "; " : "", client_message);
		next_init = hs_clock_usec() + (int64) ERROR_RETRY_MS * 1000;
		return;
	}
	generation++;
	for (int i = 0; i < N_CHANNELS; i++)
		op_clear(&ops[i]);
	cleaned = false;
	list_free_deep(not_stale);
	not_stale = NIL;
	step = S_ROOT_GET;
	error[0] = '\0';
	granted_timeout = 0;
	setup_logged = false;
}

/* The sequence number of an election znode's name, or -1 if not one of ours. */
static int64
node_seq(const char *name)
{
	size_t		len = strlen(name);
	int64		seq = 0;

	if (len != 2 + 16 + 1 + 16 + 1 + SEQ_DIGITS || strncmp(name, "n_", 2) != 0)
		return -1;
	for (const char *p = name + len - SEQ_DIGITS; *p; p++)
	{
		if (*p < '0' || *p > '9')
			return -1;
		seq = seq * 10 + (*p - '0');
	}
	return seq;
}

static char *
child_path(const char *dir, const char *name)
{
	return psprintf("%s/%s", dir, name);
}

/* What to show of the leader: its znode's data, without the key names. */
static void
summarize_leader(const char *node, const char *data, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s (fencing token %lld)", data && data[0] ? data : node,
			 (long long) node_seq(node));
}

/* ------------------------------------------------------------------------
 * The main channel: setup, then the election
 * ------------------------------------------------------------------------ */

static bool
is_conn_loss(int rc)
{
	return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT;
}

/* An answer that proves the session alive when the request was received. */
static bool
is_answer(int rc)
{
	return rc == ZOK || rc == ZNONODE || rc == ZNODEEXISTS || rc == ZNOTEMPTY ||
		rc == ZBADVERSION || rc == ZNOAUTH || rc == ZNOCHILDRENFOREPHEMERALS;
}

static const char *
acl_error(const char *what, const char *path)
{
	return psprintf("ZooKeeper refused to %s %s: no permission (the znode's ACL)", what, path);
}

/* Send the request of the current step; false when there is none now. */
static bool
main_issue(bool primary)
{
	Tag		   *tag;

	switch (step)
	{
		case S_ROOT_GET:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_aget(zh, root, 0, on_data, tag));
			return true;
		case S_ROOT_PARENTS:
			{
				const char *p = root;
				int			k = 0;

				/* the parent_index-th '/' after the first ends the next parent */
				for (p = root + 1; *p; p++)
					if (*p == '/' && ++k == parent_index)
						break;
				if (*p == '\0')
				{
					step = S_ROOT_CREATE;
					return main_issue(primary);
				}
				tag = op_start(CH_MAIN);
				op_sent(tag, zoo_acreate(zh, pnstrdup(root, p - root), "", 0,
										 &ZOO_OPEN_ACL_UNSAFE, 0, on_string, tag));
				return true;
			}
		case S_ROOT_CREATE:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_acreate(zh, root, ROOT_MARK, strlen(ROOT_MARK),
									 &ZOO_OPEN_ACL_UNSAFE, 0, on_string, tag));
			return true;
		case S_ROOT_CHILDREN:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_aget_children(zh, root, 0, on_children, tag));
			return true;
		case S_ROOT_MARK:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_aset(zh, root, ROOT_MARK, strlen(ROOT_MARK), root_version,
								  on_stat, tag));
			return true;
		case S_DIR_ELECTION:
		case S_DIR_WORKERS:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_acreate(zh, step == S_DIR_ELECTION ? election_dir : workers_dir,
									 "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, on_string, tag));
			return true;
		case S_READY:
			/* a standby too deletes the stale znodes of this server */
			if (error[0] != '\0' || (cleaned && !primary))
				return false;
			step = E_LIST;
			return main_issue(primary);
		case E_LIST:
		case E_CHECK:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_aget_children(zh, election_dir, 0, on_children, tag));
			return true;
		case E_STALE_GET:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_aget(zh, child_path(election_dir, stale_node), 0, on_data, tag));
			return true;
		case E_STALE_DELETE:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_adelete(zh, child_path(election_dir, stale_node), -1, on_void, tag));
			return true;
		case E_CREATE:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_acreate(zh, psprintf("%s/n_%s_%s_", election_dir, id_hash, session_hex),
									 identity, strlen(identity), &ZOO_OPEN_ACL_UNSAFE,
									 ZOO_EPHEMERAL | ZOO_SEQUENCE, on_string, tag));
			return true;
		case E_LEADER_GET:
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_aget(zh, child_path(election_dir, leader_node), 0, on_data, tag));
			return true;
		case E_WATCH:
			pred_changed = false;
			tag = op_start(CH_MAIN);
			op_sent(tag, zoo_awexists(zh, child_path(election_dir, pred_node),
									  pred_watcher, NULL, on_stat, tag));
			return true;
		case E_WAIT:
			if (!pred_changed)
				return false;
			step = E_CHECK;
			return main_issue(primary);
		case E_LEADING:
			return false;
		case S_FAILED:
			if (hs_clock_usec() < retry_at)
				return false;
			error[0] = '\0';
			step = S_ROOT_GET;
			return main_issue(primary);
	}
	return false;
}

/* The election's children: ours, the predecessor, the first; leader or not. */
static void
election_check(const Op *op)
{
	int64		own_seq = own_node ? node_seq(own_node) : -1;
	const char *first = NULL;
	const char *pred = NULL;
	int64		first_seq = -1;
	int64		pred_seq = -1;
	bool		own_found = false;

	for (int i = 0; i < op->nchildren; i++)
	{
		const char *c = op->children[i];
		int64		seq = node_seq(c);

		if (seq < 0)
			continue;
		if (own_node && strcmp(c, own_node) == 0)
			own_found = true;
		if (first == NULL || seq < first_seq)
		{
			first = c;
			first_seq = seq;
		}
		if (seq < own_seq && seq > pred_seq)
		{
			pred = c;
			pred_seq = seq;
		}
	}
	if (!own_found)
	{
		/* our znode is gone (deleted by hand): stop leading, join again */
		lose_leadership("this server's election znode was deleted");
		set_str(&own_node, NULL);
		step = E_LIST;
		return;
	}
	if (pred == NULL)
	{
		char		info[HS_ZK_INFO_MAX];

		snprintf(info, sizeof(info), "this server (%s)", own_node);
		if (!was_leader)
			ereport(LOG,
					(errmsg("hasched coordinator: leading, with election znode %s (fencing token %lld)",
							own_node, (long long) own_seq)));
		was_leader = true;
		hs_fencing_set_leader(true, own_seq, op->sent, info);
		hs_fencing_confirm(op->sent);
		step = E_LEADING;
		return;
	}
	lose_leadership("another server's election znode comes first");
	if (pred_node == NULL || strcmp(pred_node, pred) != 0)
		ereport(LOG,
				(errmsg("hasched coordinator: in the election behind %s; %s leads", pred, first)));
	set_str(&pred_node, pred);
	set_str(&leader_node, first);
	step = E_LEADER_GET;
}

static bool
name_listed(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
	{
		if (strcmp((const char *) lfirst(lc), name) == 0)
			return true;
	}
	return false;
}

/* Handle the answer of the current step. */
static void
main_result(int rc, bool primary)
{
	Op		   *op = &ops[CH_MAIN];

	if (is_conn_loss(rc))
	{
		/* the step is sent again once connected; a create looks for its znode first */
		if (step == E_CREATE)
			step = E_LIST;
		return;
	}
	if (rc == ZCLOSING || rc == ZSESSIONEXPIRED || rc == ZINVALIDSTATE)
		return;					/* the round closes the session */

	switch (step)
	{
		case S_ROOT_GET:
			if (rc == ZNONODE)
			{
				parent_index = 1;
				step = S_ROOT_PARENTS;
			}
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("read", root));
			else if (rc != ZOK)
				fail("reading %s failed: %s", root, zerror(rc));
			else if (op->value && strcmp(op->value, ROOT_MARK) == 0)
				step = S_DIR_ELECTION;
			else if (op->value == NULL || op->value[0] == '\0')
			{
				root_version = op->version;
				step = S_ROOT_CHILDREN;
			}
			else
				fail("znode %s holds data that is not hasched's (\"%.60s\"); choose another hasched.zookeeper_path",
					 root, op->value);
			break;
		case S_ROOT_PARENTS:
			if (rc == ZOK || rc == ZNODEEXISTS)
				parent_index++;
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("create the parents of", root));
			else
				fail("creating the parents of %s failed: %s", root, zerror(rc));
			break;
		case S_ROOT_CREATE:
			if (rc == ZOK)
				step = S_DIR_ELECTION;
			else if (rc == ZNODEEXISTS || rc == ZNONODE)
				step = S_ROOT_GET;
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("create", root));
			else
				fail("creating %s failed: %s", root, zerror(rc));
			break;
		case S_ROOT_CHILDREN:
			if (rc == ZNONODE)
				step = S_ROOT_GET;
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("list", root));
			else if (rc != ZOK)
				fail("listing %s failed: %s", root, zerror(rc));
			else
			{
				for (int i = 0; i < op->nchildren; i++)
					if (strcmp(op->children[i], ELECTION_DIR) != 0 &&
						strcmp(op->children[i], WORKERS_DIR) != 0)
					{
						fail("znode %s is not hasched's: it has a child \"%.60s\"; choose another hasched.zookeeper_path",
							 root, op->children[i]);
						return;
					}
				step = S_ROOT_MARK;
			}
			break;
		case S_ROOT_MARK:
			if (rc == ZOK)
				step = S_DIR_ELECTION;
			else if (rc == ZBADVERSION || rc == ZNONODE)
				step = S_ROOT_GET;
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("write", root));
			else
				fail("writing %s failed: %s", root, zerror(rc));
			break;
		case S_DIR_ELECTION:
		case S_DIR_WORKERS:
			if (rc == ZOK || rc == ZNODEEXISTS)
			{
				if (step == S_DIR_WORKERS && !setup_logged)
				{
					ereport(LOG,
							(errmsg("hasched coordinator: znode %s is ready", root)));
					setup_logged = true;
				}
				step = step == S_DIR_ELECTION ? S_DIR_WORKERS : S_READY;
			}
			else if (rc == ZNONODE)
				step = S_ROOT_GET;
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("create", step == S_DIR_ELECTION ? election_dir : workers_dir));
			else
				fail("creating the znodes under %s failed: %s", root, zerror(rc));
			break;
		case E_LIST:
			if (rc == ZNONODE)
				step = S_ROOT_GET;
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("list", election_dir));
			else if (rc != ZOK)
				fail("listing %s failed: %s", election_dir, zerror(rc));
			else
			{
				char	   *mine = psprintf("n_%s_%s_", id_hash, session_hex);
				char	   *same_server = psprintf("n_%s_", id_hash);
				const char *adopt = NULL;
				const char *stale = NULL;

				for (int i = 0; i < op->nchildren; i++)
				{
					const char *c = op->children[i];

					if (node_seq(c) < 0)
						continue;
					if (strncmp(c, mine, strlen(mine)) == 0)
						adopt = c;	/* created before a connection loss */
					else if (strncmp(c, same_server, strlen(same_server)) == 0 &&
							 !name_listed(not_stale, c))
						stale = c;	/* maybe a previous incarnation's */
				}
				cleaned = stale == NULL;
				if (stale != NULL)
				{
					set_str(&stale_node, stale);
					step = E_STALE_GET;
				}
				else if (adopt != NULL)
				{
					set_str(&own_node, adopt);
					step = E_CHECK;
				}
				else
					step = primary ? E_CREATE : S_READY;
			}
			break;
		case E_STALE_GET:
			stale_kind = rc == ZOK ? is_previous_incarnation(op->value) : INC_OTHER;
			if (stale_kind != INC_OTHER)
				step = E_STALE_DELETE;
			else
			{
				/* gone, or not provably ours: leave it, look at the others */
				if (rc == ZOK)
				{
					MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

					not_stale = lappend(not_stale, pstrdup(stale_node));
					MemoryContextSwitchTo(old);
				}
				step = E_LIST;
			}
			break;
		case E_STALE_DELETE:
			if (rc == ZOK || rc == ZNONODE)
			{
				/* ZNONODE: its session expired meanwhile */
				if (rc == ZOK)
					ereport(LOG,
							(errmsg("hasched coordinator: deleted election znode %s of this server's previous %s",
									stale_node,
									stale_kind == INC_POSTMASTER ? "postmaster" : "coordinator"),
							 errdetail("Its session was still open in ZooKeeper; the process that held it is gone.")));
				set_str(&stale_node, NULL);
				step = E_LIST;
			}
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("delete", stale_node));
			else
				fail("deleting %s failed: %s", stale_node, zerror(rc));
			break;
		case E_CREATE:
			if (rc == ZOK && op->value)
			{
				const char *slash = strrchr(op->value, '/');

				set_str(&own_node, slash ? slash + 1 : op->value);
				step = E_CHECK;
			}
			else if (rc == ZNONODE)
				step = S_ROOT_GET;
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("create znodes in", election_dir));
			else
				fail("joining the election in %s failed: %s", election_dir, zerror(rc));
			break;
		case E_CHECK:
			if (rc == ZNONODE)
				step = S_ROOT_GET;
			else if (rc != ZOK)
				fail("listing %s failed: %s", election_dir, zerror(rc));
			else
				election_check(op);
			break;
		case E_LEADER_GET:
			if (rc == ZOK)
			{
				char		info[HS_ZK_INFO_MAX];

				summarize_leader(leader_node, op->value, info, sizeof(info));
				hs_fencing_set_leader(false, 0, 0, info);
				step = E_WATCH;
			}
			else
				step = E_CHECK;
			break;
		case E_WATCH:
			/* watching it: wait for it to go; gone already: look again */
			step = rc == ZOK ? E_WAIT : E_CHECK;
			break;
		default:
			break;
	}
}

static void
drive_main(bool primary)
{
	for (int n = 0; n < 16; n++)
	{
		int			rc;

		if (ops[CH_MAIN].busy)
			return;
		if (op_take(CH_MAIN, &rc))
		{
			if (is_answer(rc))
				hs_fencing_confirm(ops[CH_MAIN].sent);
			main_result(rc, primary);
			continue;
		}
		if (!connected || !main_issue(primary))
			return;
	}
}

/* ------------------------------------------------------------------------
 * The probe: keeps the leader's deadline ahead
 * ------------------------------------------------------------------------ */

static int
probe_interval_ms(void)
{
	return Max(50, Min(granted_timeout / 6, 500));
}

static void
drive_probe(void)
{
	int			rc;

	if (op_take(CH_PROBE, &rc))
	{
		if (is_answer(rc))
			hs_fencing_confirm(ops[CH_PROBE].sent);
		if (rc == ZNONODE && probe_on_own && step == E_LEADING)
		{
			lose_leadership("this server's election znode is gone");
			set_str(&own_node, NULL);
			step = E_LIST;
		}
	}
	if (!connected || ops[CH_PROBE].busy || hs_clock_usec() < next_probe)
		return;
	{
		Tag		   *tag = op_start(CH_PROBE);

		next_probe = ops[CH_PROBE].sent + (int64) probe_interval_ms() * 1000;
		probe_on_own = own_node != NULL && step == E_LEADING;
		op_sent(tag, zoo_aexists(zh, probe_on_own ? child_path(election_dir, own_node) : root,
								 0, on_stat, tag));
	}
}

/* ------------------------------------------------------------------------
 * The workers' znodes
 * ------------------------------------------------------------------------ */

/* A child's name back to the worker's name (%XX escapes); false if malformed. */
static bool
decode_worker(const char *in, char *out, size_t outlen)
{
	size_t		n = 0;

	for (const char *p = in; *p; p++)
	{
		int			c = (unsigned char) *p;

		if (c == '%')
		{
			unsigned int v;

			if (!isxdigit((unsigned char) p[1]) || !isxdigit((unsigned char) p[2]) ||
				sscanf(p + 1, "%2x", &v) != 1 || v == 0)
				return false;
			c = (int) v;
			p += 2;
		}
		if (n + 1 >= outlen)
			return false;
		out[n++] = (char) c;
	}
	out[n] = '\0';
	return n > 0;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

static void
drive_workers(void)
{
	int			rc;
	bool		leading = step == E_LEADING && hs_fencing_leader_ok();

	if (op_take(CH_WORKERS, &rc))
	{
		Op		   *op = &ops[CH_WORKERS];

		if (is_answer(rc))
			hs_fencing_confirm(op->sent);
		if (rc == ZOK && leading)
		{
			TimestampTz now = GetCurrentTimestamp();

			qsort(op->children, op->nchildren, sizeof(char *), cmp_names);
			/* a name listed before and not now: that worker's session ended */
			for (int i = 0; workers_listed && i < n_worker_names; i++)
			{
				char		name[HS_WORKER_NAME_MAX + 1];

				if (op->nchildren > 0 &&
					bsearch(&worker_names[i], op->children, op->nchildren,
							sizeof(char *), cmp_names) != NULL)
					continue;
				if (!decode_worker(worker_names[i], name, sizeof(name)))
					continue;
				ereport(LOG,
						(errmsg("hasched coordinator: worker \"%s\" lost its ZooKeeper session; its leases are requeued",
								name)));
				hs_fencing_worker_lost(name, now);
			}
			clear_workers();
			worker_names = op->children;
			n_worker_names = op->nchildren;
			op->children = NULL;
			op->nchildren = 0;
			workers_listed = true;
		}
		else if (rc != ZOK && !is_conn_loss(rc))
			workers_changed = true; /* e.g. the directory was deleted: look again later */
	}
	if (!leading)
	{
		if (workers_listed)
			clear_workers();
		return;
	}
	if (!connected || ops[CH_WORKERS].busy || (workers_listed && !workers_changed))
		return;
	workers_changed = false;
	{
		Tag		   *tag = op_start(CH_WORKERS);

		op_sent(tag, zoo_awget_children(zh, workers_dir, workers_watcher, NULL,
										on_children, tag));
	}
}

/* ------------------------------------------------------------------------
 * The round
 * ------------------------------------------------------------------------ */

/* The session's state, after zookeeper_process(). */
static bool
session_alive(void)
{
	int			st = zoo_state(zh);
	bool		now_connected = st == ZOO_CONNECTED_STATE;

	if (st == ZOO_EXPIRED_SESSION_STATE || st == ZOO_AUTH_FAILED_STATE)
	{
		ereport(LOG,
				(errmsg("hasched coordinator: ZooKeeper session 0x%s %s; starting a new one",
						session_hex[0] ? session_hex : "(none)",
						st == ZOO_EXPIRED_SESSION_STATE ? "expired" : "failed authentication")));
		return false;
	}
	if (now_connected && !connected)
	{
		const clientid_t *cid = zoo_client_id(zh);
		int64		id = cid ? cid->client_id : 0;

		if (id != session_id)
		{
			session_id = id;
			snprintf(session_hex, sizeof(session_hex), "%016llx", (unsigned long long) id);
			granted_timeout = zoo_recv_timeout(zh);
			ereport(LOG,
					(errmsg("hasched coordinator: ZooKeeper session 0x%s on %s, session timeout %d ms",
							session_hex, zoo_get_current_server(zh), granted_timeout)));
		}
		next_probe = 0;
	}
	connected = now_connected;
	return true;
}

/* Why the granted session timeout does not allow leading, or NULL. */
static char *
timeout_problem(void)
{
	if (granted_timeout == 0)
		return NULL;
	if (granted_timeout != hs_zookeeper_session_timeout)
		return psprintf("the ensemble granted a session timeout of %d ms, not the %d ms of hasched.zookeeper_session_timeout; set it within the ensemble's minSessionTimeout and maxSessionTimeout (by default 2 and 20 times its tickTime)",
						granted_timeout, hs_zookeeper_session_timeout);
	if (hs_zookeeper_fence_margin >= granted_timeout)
		return psprintf("hasched.zookeeper_fence_margin (%d ms) must be below the session timeout (%d ms)",
						hs_zookeeper_fence_margin, granted_timeout);
	return NULL;
}

static void
publish(bool primary)
{
	int			state;
	char		server[HS_ZK_INFO_MAX] = "";

	if (error[0] != '\0')
		state = HS_ZK_ERROR;
	else if (zh == NULL || !connected)
		state = HS_ZK_CONNECTING;
	else if (!primary)
		state = HS_ZK_STANDBY;
	else if (step == E_LEADING)
		state = HS_ZK_LEADER;
	else
		state = HS_ZK_ELECTING;
	if (zh && connected)
		strlcpy(server, zoo_get_current_server(zh), sizeof(server));
	else
		strlcpy(server, client_message, sizeof(server));
	hs_fencing_set_session(state, connected, session_id, granted_timeout, server,
						   state == HS_ZK_ERROR ? error : "");
}

static long
coordinator_round(void)
{
	bool		primary = !RecoveryInProgress();
	int64		now;
	int64		delay_us = 1000 * 1000;
	bool		acting;

	if (zh != NULL)
	{
		(void) zookeeper_process(zh, pending_events);
		pending_events = 0;
		if (!session_alive())
			close_session();
	}
	now = hs_clock_usec();
	if (zh == NULL && now >= next_init)
		open_session();

	if (zh != NULL && step != S_FAILED)
	{
		/* a timeout not granted, or a margin changed by a reload: no election */
		char	   *problem = timeout_problem();

		if (problem != NULL)
		{
			if (own_node != NULL)
				close_session();	/* leave the election at once */
			else
				fail("%s", problem);
		}
	}
	if (zh != NULL)
	{
		drive_main(primary);
		drive_probe();
		drive_workers();
	}
	publish(primary);

	/* the gate just closed (deadline passed, leadership lost): stop the jobs */
	acting = hs_fencing_leader_ok();
	if (was_acting && !acting)
	{
		ereport(LOG,
				(errmsg("hasched coordinator: fenced: %s", hs_fencing_why())));
		hs_fencing_stop_executors();
	}
	was_acting = acting;

	/* when to look again */
	now = hs_clock_usec();
	if (zh != NULL)
	{
		struct timeval tv = {1, 0};
		int			fd = -1;
		int			interest = 0;

		if (zookeeper_interest(zh, &fd, &interest, &tv) == ZOK || fd >= 0)
		{
			zk_fd = fd;
			zk_interest = interest;
		}
		else
		{
			zk_fd = -1;
			zk_interest = 0;
		}
		delay_us = Min(delay_us, (int64) tv.tv_sec * 1000000 + tv.tv_usec);
		if (connected && !ops[CH_PROBE].busy)
			delay_us = Min(delay_us, next_probe - now);
		if (step == S_FAILED)
			delay_us = Min(delay_us, retry_at - now);
	}
	else
		delay_us = Min(delay_us, next_init - now);
	/* a standby looks for its promotion as often as the scheduler does */
	if (!primary)
		delay_us = Min(delay_us, STANDBY_POLL_MS * 1000);
	if (acting)
	{
		/* wake when the deadline comes (a confirm of nothing only reads it) */
		int64		deadline = hs_fencing_confirm(0);

		if (deadline > 0)
			delay_us = Min(delay_us, deadline - now + 1000);
	}
	return (long) Max(0, (delay_us + 999) / 1000);
}

static int
coordinator_sockets(HsWaitSocket *socks, int max)
{
	uint32		events = 0;

	if (zh == NULL || zk_fd < 0 || max < 1)
		return 0;
	if (zk_interest & ZOOKEEPER_READ)
		events |= WL_SOCKET_READABLE;
	if (zk_interest & ZOOKEEPER_WRITE)
		events |= WL_SOCKET_WRITEABLE;
	if (events == 0)
		return 0;
	socks[0].sock = zk_fd;
	socks[0].events = events;
	return 1;
}

static void
coordinator_socket_ready(pgsocket sock, uint32 events)
{
	if (events & WL_SOCKET_READABLE)
		pending_events |= ZOOKEEPER_READ;
	if (events & WL_SOCKET_WRITEABLE)
		pending_events |= ZOOKEEPER_WRITE;
}

/*
 * On exit: close the gate, let the commits under way end, then close the
 * session (its election znode goes at once, and the next server leads).
 */
static void
coordinator_exit(int code, Datum arg)
{
	hs_fencing_close(CLOSE_DRAIN_MS);
	if (zh)
		zookeeper_close(zh);
	zh = NULL;
	hs_fencing_attach(0);
}

void
hasched_coordinator_main(Datum main_arg)
{
	static const HsWorkerLoop loop = {
		.name = "coordinator",
		.round = coordinator_round,
		.after_error = NULL,
		.error_pause_ms = 1000,
		.sockets = coordinator_sockets,
		.socket_ready = coordinator_socket_ready,
	};

	hs_worker_signals(false);
	hs_fencing_attach(MyProcPid);
	on_shmem_exit(coordinator_exit, (Datum) 0);

	zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
	make_identity();
	root = MemoryContextStrdup(TopMemoryContext, hs_zookeeper_path);
	election_dir = MemoryContextStrdup(TopMemoryContext, psprintf("%s/%s", root, ELECTION_DIR));
	workers_dir = MemoryContextStrdup(TopMemoryContext, psprintf("%s/%s", root, WORKERS_DIR));
	hs_worker_run(&loop);
}

/* Register the coordinator; called from _PG_init when hasched.zookeeper is set. */
void
hs_register_coordinator(void)
{
	/* shared memory only: it never connects to a database */
	hs_register_static_worker("coordinator", "hasched_coordinator_main", false,
							  BgWorkerStart_PostmasterStart);
}
