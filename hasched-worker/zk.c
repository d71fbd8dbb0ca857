/*-------------------------------------------------------------------------
 *
 * zk.c
 *		hasched-worker's ZooKeeper registration (--zookeeper): an ephemeral
 *		znode <path>/workers/<name> that lives as long as this worker's
 *		ZooKeeper session, so that when the worker dies the leader's
 *		coordinator requeues its leases at once instead of waiting for them
 *		to end.
 *
 * The single-threaded C client (libzookeeper_st) runs inside main.c's
 * poll() loop: hw_zk_poll() gives zookeeper_interest()'s socket, events and
 * timeout to the poll set, hw_zk_process() calls zookeeper_process() and
 * moves the registration on.  Completions and watchers only note their
 * answer (they run inside zookeeper_process(), in this one thread); the
 * step machine reads it afterwards.  One request is outstanding at a time.
 *
 * The steps of a session: read the root (data that is not hasched's is an
 * error), look for the workers/ directory, create whatever of the root and
 * workers/ is missing (persistent, empty: the coordinator marks the root
 * as hasched's), then create the ephemeral znode with a line that says who
 * holds it.  A znode of that name held by another session (another
 * process with the same name, or an earlier one whose session has not
 * expired yet) is not shared: the worker says so, watches it and waits;
 * when it goes, the worker waits a moment more (REGRAB_DELAY_USEC, so the
 * leader sees the name gone and requeues the old holder's leases) and
 * creates its own.  A znode of its own (a create whose answer was lost
 * with the connection) is adopted.
 *
 * Jobs are claimed only while the session is connected and the znode is
 * confirmed (hw_zk_may_claim): every job this worker holds was claimed
 * under a live znode.  A lost connection pauses claiming (the session may
 * be expiring); running jobs go on.  An expired session: the handle is
 * closed and a new session registers again.  An error (ACL refusal, the
 * root holding foreign data, a chroot that does not exist): said in the
 * log and /health, retried every ERROR_RETRY_USEC.  The worker never exits
 * because of ZooKeeper: it waits, with /health answering 503.
 *
 * IDENTIFICATION
 *		hasched-worker/zk.c
 *
 *-------------------------------------------------------------------------
 */
#include "hw.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#define ROOT_MARK			"hasched coordination root, version 1"	/* as the coordinator writes */
#define ERROR_RETRY_USEC	(10 * 1000000LL)
#define TAKEN_RECHECK_USEC	(5 * 1000000LL)
#define REGRAB_DELAY_USEC	1000000LL
#define REMIND_USEC			(60 * 1000000LL)
#define CLOSE_WAIT_USEC		3000000LL

typedef enum Step
{
	Z_NONE,						/* no session, or not connected yet */
	Z_ROOT_GET,					/* read the root's data */
	Z_DIR_EXISTS,				/* is workers/ there? */
	Z_PARENTS,					/* create the missing ancestors of our znode */
	Z_CREATE,					/* create our ephemeral znode */
	Z_OWNER,					/* it exists: whose is it? (and watch it) */
	Z_TAKEN,					/* another session's: wait for it to go */
	Z_REGISTERED,				/* ours; watched */
	Z_FAILED,					/* an error: again at retry_at */
} Step;

static zhandle_t *zh = NULL;
static Step step = Z_NONE;
static uint64_t generation = 0; /* bumped with each step change and handle */

/* the one outstanding request */
static bool busy = false;
static bool answered = false;
static int	answer_rc = 0;
static int64_t answer_owner = 0;	/* the znode's ephemeralOwner */
static char answer_data[512];

static bool own_gone = false;	/* watcher: our (or the holder's) znode was deleted */
static int	pending_events = 0;

static int64_t session_id = 0;
static bool connected = false;
static int	granted_ms = 0;
static int	parent_index = 0;
static int64_t retry_at = 0;	/* Z_FAILED, Z_TAKEN: look again then */
static int64_t regrab_at = 0;	/* Z_TAKEN: the holder's znode went; create ours then */
static int64_t init_at = 0;		/* no handle: start a session then */
static int64_t unregistered_since = 0;	/* claiming paused since (0: it is not) */
static int64_t next_remind = 0;
static int64_t taken_owner = -1;	/* the session that holds our name (0: a
									 * persistent znode; -1: none) */
static bool may_claim = false;
static bool held = false;		/* this session has held our znode */
static bool unmarked_warned = false;

static char *root = NULL;		/* --zookeeper-path */
static char *workers_dir = NULL;
static char *own_path = NULL;
static char own_data[512];
static char error[512] = "";	/* why registration failed (Z_FAILED) */
static char last_error_logged[512] = "";
static char client_message[512] = "";	/* the client library's last complaint */

/* ------------------------------------------------------------------------
 * Checking the options (at start)
 * ------------------------------------------------------------------------ */

/* host:port[,host:port...][/chroot]; NULL if good, else why (static). */
const char *
hw_zk_check_connect(const char *s)
{
	static char why[300];
	const char *chroot = strchr(s, '/');
	size_t		hlen = chroot ? (size_t) (chroot - s) : strlen(s);
	const char *p = s;

	if (hlen == 0)
		return "it must list host:port pairs separated by commas, like zk1:2181,zk2:2181,zk3:2181";
	while (p < s + hlen)
	{
		const char *comma = memchr(p, ',', (size_t) (s + hlen - p));
		const char *end = comma ? comma : s + hlen;
		const char *colon = NULL;
		long		port = 0;

		for (const char *q = p; q < end; q++)
			if (*q == ':')
				colon = q;
		if (end == p)
			return "it must list host:port pairs separated by commas, like zk1:2181,zk2:2181,zk3:2181";
		if (colon == NULL || colon == p)
		{
			snprintf(why, sizeof(why), "\"%.*s\" is not host:port", (int) (end - p), p);
			return why;
		}
		for (const char *q = colon + 1; q < end; q++)
		{
			if (*q < '0' || *q > '9' || port > 65535)
			{
				port = -1;
				break;
			}
			port = port * 10 + (*q - '0');
		}
		if (colon + 1 == end || port < 1 || port > 65535)
		{
			snprintf(why, sizeof(why), "\"%.*s\" has no valid port (1 to 65535)", (int) (end - p), p);
			return why;
		}
		p = comma ? comma + 1 : end;
		if (comma && p == s + hlen)
			return "it must list host:port pairs separated by commas, like zk1:2181,zk2:2181,zk3:2181";
	}
	if (chroot && (strlen(chroot) < 2 || chroot[strlen(chroot) - 1] == '/' ||
				   strstr(chroot, "//") != NULL))
	{
		snprintf(why, sizeof(why), "the chroot suffix \"%s\" is not a znode path", chroot);
		return why;
	}
	return NULL;
}

/* An absolute znode path, as hasched.zookeeper_path; NULL if good. */
const char *
hw_zk_check_path(const char *p)
{
	size_t		n = strlen(p);

	if (p[0] != '/' || n < 2 || p[n - 1] == '/' || strstr(p, "//") != NULL)
		return "it is not an absolute znode path (like /hasched)";
	if (strstr(p, "/./") || strstr(p, "/../") ||
		(n >= 2 && strcmp(p + n - 2, "/.") == 0) ||
		(n >= 3 && strcmp(p + n - 3, "/..") == 0))
		return "it has a . or .. component";
	if (strcmp(p, "/zookeeper") == 0 || strncmp(p, "/zookeeper/", 11) == 0)
		return "it is under /zookeeper, which ZooKeeper reserves";
	for (const char *q = p; *q; q++)
		if ((unsigned char) *q < 0x20 || *q == 0x7f)
			return "it holds a control character";
	return NULL;
}

/*
 * The znode name of a worker name: every byte outside A-Z a-z 0-9 . _ : @ -
 * as %XX (the coordinator decodes it).  Returns malloc'd text.
 */
char *
hw_zk_encode_name(const char *name)
{
	static const char hex[] = "0123456789ABCDEF";
	char	   *out = malloc(strlen(name) * 3 + 1);
	char	   *o = out;

	if (out == NULL)
		return NULL;
	for (const unsigned char *p = (const unsigned char *) name; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == ':' ||
			*p == '@' || *p == '-')
			*o++ = (char) *p;
		else
		{
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = '\0';
	return out;
}

/* ------------------------------------------------------------------------
 * Requests and their answers
 * ------------------------------------------------------------------------ */

typedef struct Tag
{
	uint64_t	generation;
} Tag;

static Tag *
request_start(void)
{
	Tag		   *tag = malloc(sizeof(Tag));

	if (tag == NULL)
		return NULL;
	tag->generation = generation;
	busy = true;
	answered = false;
	answer_owner = 0;
	answer_data[0] = '\0';
	return tag;
}

/* After a zoo_a* call: a request that was not sent is answered at once. */
static void
request_sent(Tag *tag, int rc)
{
	if (rc == ZOK)
		return;
	busy = false;
	answered = true;
	answer_rc = rc;
	free(tag);
}

/* A completion: true if it answers the current request. */
static bool
request_done(const void *data, int rc)
{
	Tag		   *tag = (Tag *) data;
	bool		current = tag->generation == generation;

	free(tag);
	if (!current)
		return false;
	busy = false;
	answered = true;
	answer_rc = rc;
	return true;
}

static void
on_void(int rc, const void *data)
{
	(void) request_done(data, rc);
}

static void
on_string(int rc, const char *value, const void *data)
{
	(void) request_done(data, rc);
}

static void
on_stat(int rc, const struct Stat *stat, const void *data)
{
	if (request_done(data, rc) && rc == ZOK && stat)
		answer_owner = stat->ephemeralOwner;
}

static void
on_data(int rc, const char *value, int len, const struct Stat *stat, const void *data)
{
	if (request_done(data, rc) && rc == ZOK)
	{
		size_t		n = len > 0 ? (size_t) len : 0;

		if (n >= sizeof(answer_data))
			n = sizeof(answer_data) - 1;
		if (n > 0 && value)
			memcpy(answer_data, value, n);
		answer_data[n] = '\0';
		for (size_t i = 0; i < n; i++)
			if ((unsigned char) answer_data[i] < 0x20)
				answer_data[i] = ' ';
		if (stat)
			answer_owner = stat->ephemeralOwner;
	}
}

static void
session_watcher(zhandle_t *h, int type, int state, const char *path, void *ctx)
{
	/* hw_zk_process reads zoo_state() */
}

static void
own_watcher(zhandle_t *h, int type, int state, const char *path, void *ctx)
{
	if (type == ZOO_DELETED_EVENT)
		own_gone = true;
}

/*
 * The client's log lines (warnings and errors): keep the message part of
 * the last error (e.g. a refused connection), which says more than the
 * warnings around it.
 */
static void
client_log(const char *message)
{
	const char *p = strstr(message, "ZOO_");
	size_t		n;

	if (p == NULL || strncmp(p, "ZOO_ERROR", 9) != 0)
		return;
	p = strstr(p, ": ");
	snprintf(client_message, sizeof(client_message), "%s", p ? p + 2 : message);
	n = strlen(client_message);
	while (n > 0 && (client_message[n - 1] == '\n' || client_message[n - 1] == ' '))
		client_message[--n] = '\0';
}

static bool
is_conn_loss(int rc)
{
	return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT;
}

/* ------------------------------------------------------------------------
 * States
 * ------------------------------------------------------------------------ */

static void
go(Step s)
{
	step = s;
	if (s != Z_TAKEN)
		regrab_at = 0;
	generation++;				/* an answer still on its way is for an old step */
	busy = false;
	answered = false;
}

/* The first reminder that the worker is not registered: after a session timeout. */
static int64_t
first_remind(void)
{
	int64_t		t = (int64_t) hw_cfg.zk_timeout_ms * 1000;

	return t < REMIND_USEC ? t : REMIND_USEC;
}

/* Claiming may go on or must stop; say so when that changes. */
static void
set_may_claim(bool ok, const char *why)
{
	if (ok && !may_claim)
	{
		if (unregistered_since != 0)
			hw_log("INFO", "ZooKeeper: znode %s registered (session 0x%016llx); taking jobs",
				   own_path, (unsigned long long) session_id);
		unregistered_since = 0;
	}
	else if (!ok && may_claim)
	{
		hw_log("WARNING", "ZooKeeper: taking no new jobs: %s; running jobs go on", why);
		unregistered_since = hw_now();
		next_remind = unregistered_since + first_remind();
	}
	may_claim = ok;
}

static void
fail(const char *fmt,...) __attribute__((format(printf, 1, 2)));

static void
fail(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(error, sizeof(error), fmt, ap);
	va_end(ap);
	go(Z_FAILED);
	retry_at = hw_now() + ERROR_RETRY_USEC;
	if (strcmp(error, last_error_logged) != 0)
		hw_log("ERROR", "ZooKeeper: %s; taking no jobs; trying again every %lld s",
			   error, ERROR_RETRY_USEC / 1000000);
	snprintf(last_error_logged, sizeof(last_error_logged), "%s", error);
	set_may_claim(false, error);
}

static void
close_handle(void)
{
	if (zh)
		zookeeper_close(zh);
	zh = NULL;
	generation++;
	busy = false;
	answered = false;
	connected = false;
	pending_events = 0;
	session_id = 0;
	step = Z_NONE;
}

static void
open_handle(void)
{
	errno = 0;
	client_message[0] = '\0';
	zh = zookeeper_init2(hw_cfg.zookeeper, session_watcher, hw_cfg.zk_timeout_ms, NULL, NULL,
						 ZOO_NO_LOG_CLIENTENV, client_log);
	if (zh == NULL)
	{
		snprintf(error, sizeof(error), "cannot start a ZooKeeper session with \"%s\": %s%s%s",
				 hw_cfg.zookeeper, errno ? strerror(errno) : "the client refused it",
				 client_message[0] ? "; " : "", client_message);
		if (strcmp(error, last_error_logged) != 0)
			hw_log("ERROR", "ZooKeeper: %s; taking no jobs; trying again every %lld s",
				   error, ERROR_RETRY_USEC / 1000000);
		snprintf(last_error_logged, sizeof(last_error_logged), "%s", error);
		init_at = hw_now() + ERROR_RETRY_USEC;
		return;
	}
	generation++;
	step = Z_NONE;
}

/* The session's state after zookeeper_process(); false if it is over. */
static bool
session_check(void)
{
	int			st = zoo_state(zh);
	bool		now_connected = st == ZOO_CONNECTED_STATE;

	if (st == ZOO_EXPIRED_SESSION_STATE || st == ZOO_AUTH_FAILED_STATE)
	{
		hw_log("WARNING", "ZooKeeper: session 0x%016llx %s%s; starting a new one",
			   (unsigned long long) session_id,
			   st == ZOO_EXPIRED_SESSION_STATE ? "expired" : "failed authentication",
			   held ?
			   ": its znode is gone, and the leader requeues the jobs this worker holds" : "");
		set_may_claim(false, "the ZooKeeper session expired");
		return false;
	}
	if (now_connected && !connected)
	{
		const clientid_t *cid = zoo_client_id(zh);
		int64_t		id = cid ? cid->client_id : 0;

		client_message[0] = '\0';
		if (id != session_id)
		{
			session_id = id;
			held = false;
			granted_ms = zoo_recv_timeout(zh);
			hw_log("INFO", "ZooKeeper: session 0x%016llx on %s, session timeout %d ms",
				   (unsigned long long) id, zoo_get_current_server(zh), granted_ms);
			if (granted_ms != hw_cfg.zk_timeout_ms)
				hw_log("WARNING", "ZooKeeper: the ensemble granted a session timeout of %d ms, not the %d ms of --zookeeper-session-timeout (its minSessionTimeout..maxSessionTimeout, by default 2 to 20 ticks): the leader learns of this worker's death after %d ms",
					   granted_ms, hw_cfg.zk_timeout_ms, granted_ms);
			go(Z_ROOT_GET);
		}
		else
			hw_log("INFO", "ZooKeeper: connected again to %s (session 0x%016llx kept)",
				   zoo_get_current_server(zh), (unsigned long long) id);
		/* a request lost with the connection is sent again */
		busy = false;
		generation++;
	}
	else if (!now_connected && connected)
		hw_log("WARNING", "ZooKeeper: connection lost (session 0x%016llx)%s%s; taking no new jobs until it is back",
			   (unsigned long long) session_id, client_message[0] ? ": " : "", client_message);
	connected = now_connected;
	return true;
}

/*
 * Where the i-th ancestor of our znode (1: the topmost) ends in workers_dir:
 * at the i-th '/' after the leading one, or at the end (workers/ itself).
 */
static const char *
prefix_end(int i)
{
	const char *p;
	int			k = 0;

	for (p = workers_dir + 1; *p; p++)
		if (*p == '/' && ++k == i)
			break;
	return p;
}

/* Send the request of the current step; false when there is none now. */
static bool
issue(void)
{
	Tag		   *tag;

	switch (step)
	{
		case Z_NONE:
		case Z_REGISTERED:
			return false;
		case Z_ROOT_GET:
			if ((tag = request_start()) == NULL)
				return false;
			request_sent(tag, zoo_aget(zh, root, 0, on_data, tag));
			return true;
		case Z_DIR_EXISTS:
			if ((tag = request_start()) == NULL)
				return false;
			request_sent(tag, zoo_aexists(zh, workers_dir, 0, on_stat, tag));
			return true;
		case Z_PARENTS:
			{
				const char *end = prefix_end(parent_index);
				char		path[1024];

				snprintf(path, sizeof(path), "%.*s", (int) (end - workers_dir), workers_dir);
				if ((tag = request_start()) == NULL)
					return false;
				request_sent(tag, zoo_acreate(zh, path, "", 0, &ZOO_OPEN_ACL_UNSAFE,
											  ZOO_PERSISTENT, on_string, tag));
				return true;
			}
		case Z_CREATE:
			if ((tag = request_start()) == NULL)
				return false;
			own_gone = false;
			request_sent(tag, zoo_acreate(zh, own_path, own_data, (int) strlen(own_data),
										  &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL, on_string, tag));
			return true;
		case Z_OWNER:
			if ((tag = request_start()) == NULL)
				return false;
			own_gone = false;
			request_sent(tag, zoo_awget(zh, own_path, own_watcher, NULL, on_data, tag));
			return true;
		case Z_TAKEN:
			if (own_gone && regrab_at == 0)
			{
				/* let the leader see the name gone (and requeue the old holder's leases) first */
				hw_log("INFO", "ZooKeeper: znode %s is gone; registering in %.1f s",
					   own_path, (double) REGRAB_DELAY_USEC / 1e6);
				regrab_at = hw_now() + REGRAB_DELAY_USEC;
				retry_at = regrab_at;
			}
			if (hw_now() < retry_at)
				return false;
			go(regrab_at != 0 ? Z_CREATE : Z_OWNER);
			regrab_at = 0;
			return issue();
		case Z_FAILED:
			if (hw_now() < retry_at)
				return false;
			error[0] = '\0';
			go(Z_ROOT_GET);
			return issue();
	}
	return false;
}

static const char *
acl_error(const char *what, const char *path)
{
	static char buf[300];

	snprintf(buf, sizeof(buf), "the ensemble refused to %s %.200s: no permission (the znode's ACL)",
			 what, path);
	return buf;
}

/* Handle the answer of the current step. */
static void
result(int rc)
{
	if (is_conn_loss(rc))
	{
		/* sent again once connected; a create looks for its znode first */
		if (step == Z_CREATE)
			go(Z_OWNER);
		return;
	}
	if (rc == ZCLOSING || rc == ZSESSIONEXPIRED || rc == ZINVALIDSTATE)
		return;					/* session_check starts a new session */

	switch (step)
	{
		case Z_ROOT_GET:
			if (rc == ZNONODE)
			{
				parent_index = 1;
				go(Z_PARENTS);
			}
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("read", root));
			else if (rc != ZOK)
				fail("reading %s failed: %s", root, zerror(rc));
			else if (answer_data[0] != '\0' && strcmp(answer_data, ROOT_MARK) != 0)
				fail("znode %s holds data that is not hasched's (\"%.60s\"): give --zookeeper-path the servers' hasched.zookeeper_path",
					 root, answer_data);
			else
			{
				if (answer_data[0] == '\0' && !unmarked_warned)
					hw_log("WARNING", "ZooKeeper: no hasched server has taken %s yet (no coordinator uses it): check that --zookeeper-path is the servers' hasched.zookeeper_path",
						   root);
				unmarked_warned = true;
				go(Z_DIR_EXISTS);
			}
			break;
		case Z_DIR_EXISTS:
			if (rc == ZOK)
				go(Z_CREATE);
			else if (rc == ZNONODE)
			{
				parent_index = 1;
				go(Z_PARENTS);
			}
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("read", workers_dir));
			else
				fail("looking for %s failed: %s", workers_dir, zerror(rc));
			break;
		case Z_PARENTS:
			if (rc == ZOK || rc == ZNODEEXISTS)
			{
				/* workers/ itself was the last one */
				go(*prefix_end(parent_index) == '\0' ? Z_CREATE : Z_PARENTS);
				parent_index++;
			}
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("create the parents of", own_path));
			else if (rc == ZNONODE)
				fail("creating the parents of %s failed: %s (does the chroot of --zookeeper exist?)",
					 own_path, zerror(rc));
			else
				fail("creating the parents of %s failed: %s", own_path, zerror(rc));
			break;
		case Z_CREATE:
			if (rc == ZOK)
			{
				/* watch it: deleted by hand, it is created again */
				go(Z_OWNER);
			}
			else if (rc == ZNODEEXISTS)
				go(Z_OWNER);
			else if (rc == ZNONODE)
				go(Z_ROOT_GET);	/* workers/ was deleted */
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("create", own_path));
			else
				fail("creating %s failed: %s", own_path, zerror(rc));
			break;
		case Z_OWNER:
			if (rc == ZNONODE)
				go(Z_CREATE);
			else if (rc == ZNOAUTH)
				fail("%s", acl_error("read", own_path));
			else if (rc != ZOK)
				fail("reading %s failed: %s", own_path, zerror(rc));
			else if (answer_owner == session_id)
			{
				taken_owner = -1;
				last_error_logged[0] = '\0';
				held = true;
				go(Z_REGISTERED);
			}
			else
			{
				if (answer_owner != taken_owner)
				{
					if (answer_owner == 0)
						hw_log("ERROR", "ZooKeeper: znode %s exists and is not ephemeral (created by hand?): it is not this worker's and never goes by itself; delete it, or give this worker another --name; taking no jobs until it is gone",
							   own_path);
					else
						hw_log("WARNING", "ZooKeeper: znode %s already exists, held by ZooKeeper session 0x%016llx (\"%.200s\"), not this worker's: another worker process uses the name \"%s\", or an earlier one whose session has not expired yet; taking no jobs until it is gone (give each worker process its own --name)",
							   own_path, (unsigned long long) answer_owner, answer_data,
							   hw_cfg.name);
				}
				taken_owner = answer_owner;
				go(Z_TAKEN);
				/* the watch says when it goes; look again now and then anyway */
				retry_at = hw_now() + TAKEN_RECHECK_USEC;
			}
			break;
		default:
			break;
	}
}

/* ------------------------------------------------------------------------
 * The loop's side (main.c)
 * ------------------------------------------------------------------------ */

bool
hw_zk_enabled(void)
{
	return hw_cfg.zookeeper != NULL;
}

/* Set up; the session starts in the first hw_zk_process(). */
bool
hw_zk_start(void)
{
	char		host[200];
	char	   *enc;

	if (!hw_zk_enabled())
		return true;
	enc = hw_zk_encode_name(hw_cfg.name);
	root = strdup(hw_cfg.zk_path);
	workers_dir = malloc(strlen(hw_cfg.zk_path) + sizeof("/workers"));
	own_path = enc ? malloc(strlen(hw_cfg.zk_path) + sizeof("/workers/") + strlen(enc)) : NULL;
	if (enc == NULL || root == NULL || workers_dir == NULL || own_path == NULL)
		return false;
	sprintf(workers_dir, "%s/workers", hw_cfg.zk_path);
	sprintf(own_path, "%s/workers/%s", hw_cfg.zk_path, enc);
	free(enc);
	if (gethostname(host, sizeof(host)) != 0)
		strcpy(host, "unknown");
	host[sizeof(host) - 1] = '\0';
	snprintf(own_data, sizeof(own_data), "hasched-worker host=%s pid=%d queue=%s",
			 host, (int) getpid(), hw_cfg.queue);
	zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);
	unregistered_since = hw_now();
	next_remind = unregistered_since + first_remind();
	hw_log("INFO", "ZooKeeper: %s, registering %s; no jobs taken until it exists",
		   hw_cfg.zookeeper, own_path);
	return true;
}

/* May the worker claim jobs now? (Always, without --zookeeper.) */
bool
hw_zk_may_claim(void)
{
	return !hw_zk_enabled() || may_claim;
}

/*
 * Run the client: whatever arrived (events: POLLIN/POLLOUT of its socket),
 * its timers, the registration's next step.  True when claiming just
 * became allowed (look for jobs at once).
 */
bool
hw_zk_process(void)
{
	bool		before = may_claim;
	int64_t		now = hw_now();

	if (!hw_zk_enabled())
		return false;
	if (zh != NULL)
	{
		(void) zookeeper_process(zh, pending_events);
		pending_events = 0;
		if (!session_check())
			close_handle();		/* a new session at once */
	}
	if (zh == NULL && now >= init_at)
		open_handle();
	if (zh != NULL && connected)
	{
		for (int n = 0; n < 16; n++)
		{
			if (busy)
				break;
			if (answered)
			{
				answered = false;
				result(answer_rc);
				continue;
			}
			if (step == Z_REGISTERED && own_gone)
			{
				/* deleted by someone, or the session is expiring (the
				 * server can send the event before it closes the
				 * connection): the create says which */
				hw_log("WARNING", "ZooKeeper: znode %s is gone (deleted, or this worker's session expired); creating it again",
					   own_path);
				go(Z_CREATE);
			}
			if (!issue())
				break;
		}
	}
	set_may_claim(zh != NULL && connected && step == Z_REGISTERED,
				  zh == NULL ? error :
				  !connected ? "no connection to ZooKeeper (the session may be expiring)" :
				  step == Z_TAKEN ? "another session holds this worker's znode" :
				  step == Z_FAILED ? error : "registering");
	if (!may_claim && unregistered_since != 0 && now >= next_remind)
	{
		hw_log("WARNING", "ZooKeeper: not registered for %.1f s (%s%s%s); taking no jobs meanwhile",
			   (double) (now - unregistered_since) / 1e6,
			   zh == NULL || step == Z_FAILED ? error :
			   !connected ? "cannot reach the ensemble" :
			   step == Z_TAKEN ? "another session holds the znode" : "registering",
			   client_message[0] && !connected ? ": " : "",
			   !connected ? client_message : "");
		next_remind = now + REMIND_USEC;
	}
	return may_claim && !before;
}

/*
 * The client's socket for poll() (or -1), its events, and the time by
 * which hw_zk_process() must run again (lowers *wake_at).
 */
int
hw_zk_poll(short *events, int64_t *wake_at)
{
	struct timeval tv = {1, 0};
	int			fd = -1;
	int			interest = 0;
	int64_t		now = hw_now();
	int64_t		due;

	*events = 0;
	if (!hw_zk_enabled())
		return -1;
	if (zh == NULL)
	{
		if (init_at < *wake_at)
			*wake_at = init_at;
		return -1;
	}
	(void) zookeeper_interest(zh, &fd, &interest, &tv);
	due = now + (int64_t) tv.tv_sec * 1000000 + tv.tv_usec;
	if (zoo_state(zh) == ZOO_EXPIRED_SESSION_STATE || zoo_state(zh) == ZOO_AUTH_FAILED_STATE)
		due = now;				/* a new session at once */
	if ((step == Z_FAILED || step == Z_TAKEN) && retry_at < due)
		due = retry_at;
	if (!may_claim && next_remind < due)
		due = next_remind;
	if (due < *wake_at)
		*wake_at = due;
	if (fd < 0)
		return -1;
	/* the commands must not inherit it */
	(void) fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (interest & ZOOKEEPER_READ)
		*events |= POLLIN;
	if (interest & ZOOKEEPER_WRITE)
		*events |= POLLOUT;
	return *events ? fd : -1;
}

/* What poll() said of that socket. */
void
hw_zk_ready(short revents)
{
	if (revents & (POLLIN | POLLHUP | POLLERR))
		pending_events |= ZOOKEEPER_READ;
	if (revents & (POLLOUT | POLLHUP | POLLERR))
		pending_events |= ZOOKEEPER_WRITE;
}

static void
json_str(char *out, size_t size, const char *s)
{
	size_t		n = 0;

	for (; *s && n + 7 < size; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c == '"' || c == '\\')
		{
			out[n++] = '\\';
			out[n++] = (char) c;
		}
		else if (c < 0x20)
			n += (size_t) snprintf(out + n, size - n, "\\u%04x", c);
		else
			out[n++] = (char) c;
	}
	out[n] = '\0';
}

/*
 * The "zookeeper" check of /health, as a JSON object (without --zookeeper:
 * empty).  ok: registered and connected (jobs may be claimed).
 */
bool
hw_zk_health(char *out, size_t size)
{
	char		path[700];
	char		detail[600];
	const char *state;

	if (!hw_zk_enabled())
	{
		out[0] = '\0';
		return true;
	}
	state = zh == NULL ? "error" :
		!connected ? "connecting" :
		step == Z_REGISTERED ? "registered" :
		step == Z_TAKEN ? "name taken" :
		step == Z_FAILED ? "error" : "registering";
	json_str(path, sizeof(path), own_path);
	if (zh == NULL || step == Z_FAILED)
		json_str(detail, sizeof(detail), error);
	else if (!connected)
		json_str(detail, sizeof(detail), client_message[0] ? client_message : "connecting to the ensemble");
	else if (step == Z_TAKEN)
	{
		char		d[300];

		if (taken_owner == 0)
			snprintf(d, sizeof(d), "a persistent znode of this name exists (it never goes by itself): delete it, or give this worker another --name");
		else
			snprintf(d, sizeof(d), "znode held by session 0x%016llx, not this worker's: another process with this --name, or an earlier one whose session has not expired",
					 (unsigned long long) taken_owner);
		json_str(detail, sizeof(detail), d);
	}
	else
		detail[0] = '\0';
	snprintf(out, size,
			 "\"zookeeper\": {\"ok\": %s, \"state\": \"%s\", \"znode\": \"%s\","
			 " \"session\": \"0x%016llx\", \"session_timeout_ms\": %d%s%s%s}",
			 may_claim ? "true" : "false", state, path,
			 (unsigned long long) (connected ? session_id : 0), connected ? granted_ms : 0,
			 detail[0] ? ", \"detail\": \"" : "", detail, detail[0] ? "\"" : "");
	return may_claim;
}

/*
 * On exit: delete the znode (waiting for the answer up to CLOSE_WAIT_USEC)
 * and close the session.  Called once every job is reported, or when the
 * worker gives up; the leader requeues whatever this name still holds.
 */
void
hw_zk_close(void)
{
	bool		deleted = false;

	if (zh == NULL)
		return;
	if (connected && step == Z_REGISTERED)
	{
		int64_t		end = hw_now() + CLOSE_WAIT_USEC;
		Tag		   *tag;

		go(Z_NONE);
		tag = request_start();
		if (tag)
			request_sent(tag, zoo_adelete(zh, own_path, -1, on_void, tag));
		while (busy && hw_now() < end)
		{
			struct pollfd pfd = {.fd = -1};
			struct timeval tv = {0, 100000};
			int			fd = -1;
			int			interest = 0;
			int64_t		wait_ms;

			(void) zookeeper_interest(zh, &fd, &interest, &tv);
			pfd.fd = fd;
			pfd.events = (short) ((interest & ZOOKEEPER_READ ? POLLIN : 0) |
								  (interest & ZOOKEEPER_WRITE ? POLLOUT : 0));
			wait_ms = ((int64_t) tv.tv_sec * 1000000 + tv.tv_usec + 999) / 1000;
			if (wait_ms > (end - hw_now()) / 1000)
				wait_ms = (end - hw_now()) / 1000;
			if (poll(&pfd, fd >= 0 ? 1 : 0, (int) (wait_ms > 0 ? wait_ms : 0)) < 0 && errno != EINTR)
				break;
			pending_events = 0;
			hw_zk_ready(pfd.revents);
			(void) zookeeper_process(zh, pending_events);
			if (zoo_state(zh) != ZOO_CONNECTED_STATE)
				break;
		}
		deleted = answered && (answer_rc == ZOK || answer_rc == ZNONODE);
		if (!deleted)
			hw_log("WARNING", "ZooKeeper: deleting znode %s: %s; closing the session removes it",
				   own_path, answered ? zerror(answer_rc) : "no answer");
	}
	close_handle();
	hw_log("INFO", "ZooKeeper: %ssession closed", deleted ? "znode deleted, " : "");
}
