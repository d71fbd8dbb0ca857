/*-------------------------------------------------------------------------
 *
 * main.c
 *		hasched-worker: runs a command for each job of a hasched queue.
 *
 *	  hasched-worker --db CONNSTR --queue QUEUE [options] -- COMMAND [ARG...]
 *	  hasched-worker --db CONNSTR --amqp URL[,URL...] --queue QUEUE [options] -- ...
 *
 * This file: the arguments, the log, signals, and the one poll() loop that
 * carries each job through its life: fetched from the job source, its
 * command started (run.c), heartbeats while it runs, the timeout enforced,
 * then its outcome reported with the lease token (db.c) and the job
 * settled with its source.  See hw.h for the map of the files.
 *
 * IDENTIFICATION
 *		hasched-worker/main.c
 *
 *-------------------------------------------------------------------------
 */
#include "hw.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#ifndef HW_VERSION
#define HW_VERSION "unknown"
#endif

/* reports still undelivered this long after SIGTERM: give up (EX_TEMPFAIL) */
#define DRAIN_REPORT_LIMIT_USEC		(30 * 1000000LL)
#define MAX_REPORT_TRIES			5

/*
 * Pull mode takes up to --prefetch jobs beyond --concurrency only while the
 * commands finish this fast on average: a job taken ahead then waits about
 * one command's run for its slot, not the length of a long job.
 */
#define PREFETCH_MAX_RUNTIME_USEC	(1000000LL)

HwConfig	hw_cfg;
HwSource   *hw_source = NULL;

static const char *progname = "hasched-worker";
static FILE *log_fp = NULL;
static pid_t log_pid = 0;
static int	sig_pipe[2] = {-1, -1};
static HwJob *jobs = NULL;
static int	nslots = 0;			/* jobs[]: queued, running, or reporting */
static int64_t take_seq = 0;	/* HwJob.taken */
static int64_t runtime_avg = -1;	/* moving average of the commands' run time, usec */
static HwHealth health;
static bool have_health = false;
static HwAmqpUrl *amqp_urls = NULL;
static int	amqp_nurls = 0;

/* the state the health report reads */
static int64_t last_finish = 0;
static int64_t saturated_since = 0;
static bool draining = false;

/* ------------------------------------------------------------------------
 * Time and log
 * ------------------------------------------------------------------------ */

int64_t
hw_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
hw_log(const char *level, const char *fmt,...)
{
	FILE	   *f = log_fp ? log_fp : stderr;
	struct timespec ts;
	struct tm	tm;
	char		when[32];
	va_list		ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	if (log_pid == 0)
		log_pid = getpid();
	fprintf(f, "%s.%03ldZ %s[%d] %s: ", when, ts.tv_nsec / 1000000, progname, (int) log_pid, level);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	/* INFO lines (two per job) go out before the loop waits (hw_log_flush) */
	if (strcmp(level, "INFO") != 0)
		fflush(f);
}

void
hw_log_flush(void)
{
	fflush(log_fp ? log_fp : stderr);
}

static bool
log_open(void)
{
	FILE	   *f;

	if (hw_cfg.log_path == NULL)
		return true;
	f = fopen(hw_cfg.log_path, "ae");
	if (f == NULL)
		return false;
	if (log_fp != NULL)
		fclose(log_fp);
	log_fp = f;
	return true;
}

/* ------------------------------------------------------------------------
 * Arguments
 * ------------------------------------------------------------------------ */

static void
usage(FILE *f)
{
	fprintf(f,
			"%s runs a command for each job of a hasched queue.\n"
			"\n"
			"Usage:\n"
			"  %s --db CONNSTR --queue QUEUE [OPTION]... -- COMMAND [ARG]...\n"
			"  %s --db CONNSTR --amqp URL[,URL]... --queue QUEUE [OPTION]... -- COMMAND [ARG]...\n"
			"\n"
			"Without --amqp the worker claims jobs of a pull queue (woken by NOTIFY, polling\n"
			"as the fallback).  With --amqp it consumes the jobs of an amqp queue QUEUE from\n"
			"RabbitMQ (the queues hasched.QUEUE.high, .medium and .low, highest band first),\n"
			"starts each with hasched.start() and acknowledges the message only after the\n"
			"job's outcome is recorded; a message whose job is finished or whose lease token\n"
			"is stale is acknowledged and dropped without running.\n"
			"\n"
			"Each job runs COMMAND in its own process group, with the job's payload (JSON)\n"
			"on stdin and in the environment: HASCHED_JOB_ID, HASCHED_ATTEMPT,\n"
			"HASCHED_PAYLOAD (up to 100 kB), HASCHED_QUEUE, HASCHED_TENANT, HASCHED_PRIORITY,\n"
			"HASCHED_TIMEOUT (seconds), HASCHED_WORKER.  Exit status 0 completes the job\n"
			"with stdout as its result (as JSON when it is JSON, else as a string); any\n"
			"other status fails the attempt with the status and the tail of stderr (it is\n"
			"retried after a backoff until its attempts are spent).  A command that runs\n"
			"past the job's timeout has its process group killed (SIGTERM, then SIGKILL).\n"
			"\n"
			"Options:\n"
			"  --db CONNSTR          libpq connection string or URI (required); list\n"
			"                        several hosts with target_session_attrs=read-write\n"
			"                        to follow a failover\n"
			"  --queue QUEUE         the queue to work (required)\n"
			"  --amqp URL[,URL]...   consume from RabbitMQ: amqp://USER:PASSWORD@HOST:PORT/VHOST,\n"
			"                        or amqps://... for TLS (port 5671 by default);\n"
			"                        several tried in order; a lost connection is retried\n"
			"                        with backoff and jitter (unacked jobs come again)\n"
			"  --amqp-ca-file FILE   amqps: CA certificates (PEM) that the broker's\n"
			"                        certificate must chain to (default: the system's)\n"
			"  --amqp-no-verify      amqps: do not verify the broker's certificate and\n"
			"                        host name (encrypts, but trusts any broker)\n"
			"  --amqp-queue-type T   quorum (default) or classic: the x-queue-type the\n"
			"                        queues are declared with (the server's\n"
			"                        hasched.amqp_queue_type)\n"
			"  --concurrency N       jobs run at once (1..%d, default 1)\n"
			"  --prefetch N          jobs taken ahead of a free slot (0..%d, default\n"
			"                        --concurrency), only while the commands finish\n"
			"                        within 1 s on average: in pull mode up to N claimed\n"
			"                        jobs wait for a slot (heartbeated); with --amqp the\n"
			"                        broker's prefetch count is --concurrency + N (and\n"
			"                        back to --concurrency when the commands get long,\n"
			"                        the deliveries not started given back)\n"
			"  --poll-interval SECS  look for jobs at least this often (default 1); a NOTIFY\n"
			"                        wakes the worker at once for jobs due now\n"
			"  --no-listen           poll only (for a connection pooler without LISTEN)\n"
			"  --health-port PORT    serve GET /health on 127.0.0.1:PORT\n"
			"  --stall-timeout SECS  /health fails when every slot is busy and no job\n"
			"                        finished for this long (default 300)\n"
			"  --kill-grace SECS     SIGTERM to SIGKILL on a timeout (default 5)\n"
			"  --max-output BYTES    stdout kept as the result (default 65536)\n"
			"  --name NAME           worker name recorded with the jobs (default host:pid);\n"
			"                        with --zookeeper, one name per running process\n"
			"  --zookeeper CONNSTR   register an ephemeral znode in this ZooKeeper ensemble\n"
			"                        (host:port,host:port,...[/chroot]), so that when this\n"
			"                        worker dies the leader requeues its jobs as soon as\n"
			"                        its session expires instead of after their lease; no\n"
			"                        jobs are taken while the znode is not registered\n"
			"  --zookeeper-path PATH the servers' hasched.zookeeper_path (default /hasched);\n"
			"                        the znode is PATH/workers/NAME (NAME %%-encoded)\n"
			"  --zookeeper-session-timeout MS\n"
			"                        the ZooKeeper session timeout asked for (default 10000):\n"
			"                        how soon a dead worker's jobs come back\n"
			"  --log-file FILE       log to FILE (appended; SIGHUP reopens it), not stderr\n"
			"                        (--log FILE is the same)\n"
			"  -h, --help            this text\n"
			"  --version             the version\n"
			"\n"
			"Signals: SIGTERM or SIGINT stops taking jobs, waits for the running ones and\n"
			"their reports, then exits 0 (a second one kills the running commands, whose\n"
			"attempts fail and are retried); SIGHUP reopens the log file.\n"
			"\n"
			"ZooKeeper trouble (unreachable, the name held by another session, an ACL\n"
			"refusal) never ends the worker: it waits and retries, taking no jobs, and\n"
			"/health fails its \"zookeeper\" check.  Likewise an unreachable database (a\n"
			"circuit breaker probes it with backoff) or broker (reconnects with backoff):\n"
			"/health fails its \"database\" or \"broker\" check.\n"
			"\n"
			"Exit status: 0 stopped by a signal after draining; %d (EX_USAGE) bad arguments\n"
			"or a malformed URL; %d (EX_UNAVAILABLE) COMMAND not found or not executable,\n"
			"or the health port cannot be bound; %d (EX_CANTCREAT) the log file cannot be\n"
			"opened; %d (EX_TEMPFAIL) reports still undelivered 30 s after SIGTERM (those\n"
			"jobs run again after their lease); %d (EX_CONFIG) the server or the broker\n"
			"refused the worker's setup (unknown queue, wrong transport, permission denied,\n"
			"bad broker credentials or vhost, queue arguments that differ); %d (EX_OSERR)\n"
			"a system call failed.\n",
			progname, progname, progname, HW_MAX_CONCURRENCY, HW_MAX_CONCURRENCY, EX_USAGE, EX_UNAVAILABLE,
			EX_CANTCREAT, EX_TEMPFAIL, EX_CONFIG, EX_OSERR);
}

static void
bad_usage(const char *fmt,...) __attribute__((format(printf, 1, 2), noreturn));

static void
bad_usage(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry \"%s --help\" for more information.\n", progname);
	exit(EX_USAGE);
}

static long long
int_arg(const char *opt, const char *s, long long min, long long max)
{
	char	   *end;
	long long	v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		bad_usage("%s must be an integer from %lld to %lld, not \"%s\"", opt, min, max, s);
	return v;
}

static int64_t
secs_arg(const char *opt, const char *s, double min, double max)
{
	char	   *end;
	double		v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max))
		bad_usage("%s must be a number of seconds from %g to %g, not \"%s\"", opt, min, max, s);
	return (int64_t) (v * 1e6);
}

/*
 * Is the command an executable file, as execvp would find it?  Where it
 * was found goes to hw_cfg.exec_path: each job's child execs that, instead
 * of trying each directory of PATH before it again (run.c).
 */
static bool
command_found(const char *cmd, char *why, size_t whysz)
{
	const char *path;
	struct stat st;

	if (strchr(cmd, '/') != NULL)
	{
		if (stat(cmd, &st) < 0)
		{
			snprintf(why, whysz, "%s", strerror(errno));
			return false;
		}
		if (!S_ISREG(st.st_mode) || access(cmd, X_OK) < 0)
		{
			snprintf(why, whysz, "not an executable file");
			return false;
		}
		hw_cfg.exec_path = strdup(cmd);
		return hw_cfg.exec_path != NULL;
	}
	path = getenv("PATH");
	if (path == NULL || *path == '\0')
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path)
	{
		const char *colon = strchr(path, ':');
		size_t		n = colon ? (size_t) (colon - path) : strlen(path);
		char		full[PATH_MAX];

		snprintf(full, sizeof(full), "%.*s/%s", (int) (n ? n : 1), n ? path : ".", cmd);
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
		{
			hw_cfg.exec_path = strdup(full);
			return hw_cfg.exec_path != NULL;
		}
		path += n;
		if (*path == ':')
			path++;
	}
	snprintf(why, whysz, "not found in PATH");
	return false;
}

static void
parse_args(int argc, char **argv)
{
	enum
	{
		OPT_DB = 256, OPT_QUEUE, OPT_CONC, OPT_POLL, OPT_HEALTH, OPT_LOG, OPT_NAME,
		OPT_GRACE, OPT_MAXOUT, OPT_STALL, OPT_NOLISTEN, OPT_VERSION, OPT_ZK, OPT_ZK_PATH,
		OPT_ZK_TIMEOUT, OPT_AMQP, OPT_AMQP_QTYPE, OPT_AMQP_CA, OPT_AMQP_NOVERIFY, OPT_PREFETCH
	};
	static const struct option opts[] = {
		{"db", required_argument, NULL, OPT_DB},
		{"queue", required_argument, NULL, OPT_QUEUE},
		{"concurrency", required_argument, NULL, OPT_CONC},
		{"prefetch", required_argument, NULL, OPT_PREFETCH},
		{"poll-interval", required_argument, NULL, OPT_POLL},
		{"health-port", required_argument, NULL, OPT_HEALTH},
		{"log", required_argument, NULL, OPT_LOG},
		{"log-file", required_argument, NULL, OPT_LOG},
		{"amqp", required_argument, NULL, OPT_AMQP},
		{"amqp-queue-type", required_argument, NULL, OPT_AMQP_QTYPE},
		{"amqp-ca-file", required_argument, NULL, OPT_AMQP_CA},
		{"amqp-no-verify", no_argument, NULL, OPT_AMQP_NOVERIFY},
		{"name", required_argument, NULL, OPT_NAME},
		{"kill-grace", required_argument, NULL, OPT_GRACE},
		{"max-output", required_argument, NULL, OPT_MAXOUT},
		{"stall-timeout", required_argument, NULL, OPT_STALL},
		{"no-listen", no_argument, NULL, OPT_NOLISTEN},
		{"zookeeper", required_argument, NULL, OPT_ZK},
		{"zookeeper-path", required_argument, NULL, OPT_ZK_PATH},
		{"zookeeper-session-timeout", required_argument, NULL, OPT_ZK_TIMEOUT},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0}
	};
	int			c;
	static char name[256];
	bool		zk_path_given = false;
	bool		zk_timeout_given = false;

	memset(&hw_cfg, 0, sizeof(hw_cfg));
	hw_cfg.concurrency = 1;
	hw_cfg.prefetch = -1;		/* --concurrency */
	hw_cfg.poll_usec = 1000000;
	hw_cfg.kill_grace_usec = 5000000;
	hw_cfg.max_output = 65536;
	hw_cfg.stall_usec = 300 * 1000000LL;
	hw_cfg.listen = true;
	hw_cfg.zk_path = "/hasched";
	hw_cfg.zk_timeout_ms = 10000;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1)
	{
		switch (c)
		{
			case OPT_DB:
				hw_cfg.db = optarg;
				break;
			case OPT_QUEUE:
				hw_cfg.queue = optarg;
				break;
			case OPT_CONC:
				hw_cfg.concurrency = (int) int_arg("--concurrency", optarg, 1, HW_MAX_CONCURRENCY);
				break;
			case OPT_PREFETCH:
				hw_cfg.prefetch = (int) int_arg("--prefetch", optarg, 0, HW_MAX_CONCURRENCY);
				break;
			case OPT_POLL:
				hw_cfg.poll_usec = secs_arg("--poll-interval", optarg, 0.01, 3600);
				break;
			case OPT_HEALTH:
				hw_cfg.health_port = (int) int_arg("--health-port", optarg, 1, 65535);
				break;
			case OPT_LOG:
				hw_cfg.log_path = optarg;
				break;
			case OPT_NAME:
				hw_cfg.name = optarg;
				break;
			case OPT_GRACE:
				hw_cfg.kill_grace_usec = secs_arg("--kill-grace", optarg, 0, 3600);
				break;
			case OPT_MAXOUT:
				hw_cfg.max_output = (size_t) int_arg("--max-output", optarg, 0, 64 * 1024 * 1024);
				break;
			case OPT_STALL:
				hw_cfg.stall_usec = secs_arg("--stall-timeout", optarg, 1, 86400 * 7);
				break;
			case OPT_NOLISTEN:
				hw_cfg.listen = false;
				break;
			case OPT_ZK:
				hw_cfg.zookeeper = optarg;
				break;
			case OPT_AMQP:
				hw_cfg.amqp = optarg;
				break;
			case OPT_AMQP_QTYPE:
				if (strcmp(optarg, "quorum") != 0 && strcmp(optarg, "classic") != 0)
					bad_usage("--amqp-queue-type must be \"quorum\" or \"classic\", not \"%s\"", optarg);
				hw_cfg.amqp_queue_type = optarg;
				break;
			case OPT_AMQP_CA:
				hw_cfg.amqp_ca_file = optarg;
				break;
			case OPT_AMQP_NOVERIFY:
				hw_cfg.amqp_no_verify = true;
				break;
			case OPT_ZK_PATH:
				hw_cfg.zk_path = optarg;
				zk_path_given = true;
				break;
			case OPT_ZK_TIMEOUT:
				hw_cfg.zk_timeout_ms = (int) int_arg("--zookeeper-session-timeout", optarg, 100, 3600000);
				zk_timeout_given = true;
				break;
			case 'h':
				usage(stdout);
				exit(EX_OK);
			case OPT_VERSION:
				printf("hasched-worker %s\n", HW_VERSION);
				exit(EX_OK);
			case ':':
				bad_usage("option %s needs a value", argv[optind - 1]);
			default:
				if (optopt != 0)
					bad_usage("unknown option -%c", optopt);
				bad_usage("unknown option %s", argv[optind - 1]);
		}
	}
	if (hw_cfg.db == NULL || *hw_cfg.db == '\0')
		bad_usage("--db CONNSTR is required (a libpq connection string or URI)");
	if (hw_cfg.queue == NULL || *hw_cfg.queue == '\0')
		bad_usage("--queue QUEUE is required");
	if (strlen(hw_cfg.queue) > 63)
		bad_usage("--queue: a queue name has at most 63 bytes");
	if (optind >= argc)
		bad_usage("no command given: put it after \"--\", e.g. -- /usr/local/bin/handle-job");
	if (optind < 1 || strcmp(argv[optind - 1], "--") != 0)
		bad_usage("put the command after \"--\" (found \"%s\")", argv[optind]);
	hw_cfg.argv = argv + optind;
	if (hw_cfg.prefetch < 0)
		hw_cfg.prefetch = hw_cfg.concurrency;
	if (strchr(hw_cfg.db, '=') != NULL || strncmp(hw_cfg.db, "postgres", 8) == 0)
	{
		char	   *err = NULL;
		PQconninfoOption *o = PQconninfoParse(hw_cfg.db, &err);

		if (o == NULL)
		{
			size_t		n = err ? strlen(err) : 0;

			while (n > 0 && err[n - 1] == '\n')
				n--;
			bad_usage("--db: invalid connection string: %.*s", (int) n, err ? err : "out of memory");
		}
		PQconninfoFree(o);
	}
	if (hw_cfg.amqp != NULL)
	{
		const char *why = hw_amqp_parse_urls(hw_cfg.amqp, &amqp_urls, &amqp_nurls);

		if (why != NULL)
			bad_usage("--amqp: %s", why);
		if (strlen(hw_cfg.queue) > 100)
			bad_usage("--queue: with --amqp a queue name has at most 100 bytes");
		if (hw_cfg.amqp_queue_type == NULL)
			hw_cfg.amqp_queue_type = "quorum";
	}
	else if (hw_cfg.amqp_queue_type != NULL)
		bad_usage("--amqp-queue-type needs --amqp URL");
	if ((hw_cfg.amqp_ca_file != NULL || hw_cfg.amqp_no_verify) && !hw_amqp_any_tls(amqp_urls, amqp_nurls))
		bad_usage("--amqp-ca-file and --amqp-no-verify need an amqps:// URL in --amqp");
	if (hw_cfg.amqp_ca_file != NULL && access(hw_cfg.amqp_ca_file, R_OK) != 0)
		bad_usage("--amqp-ca-file: cannot read \"%s\": %s", hw_cfg.amqp_ca_file, strerror(errno));
	if (hw_cfg.zookeeper != NULL)
	{
		const char *why = hw_zk_check_connect(hw_cfg.zookeeper);

		if (why != NULL)
			bad_usage("--zookeeper \"%s\" is malformed: %s", hw_cfg.zookeeper, why);
		if ((why = hw_zk_check_path(hw_cfg.zk_path)) != NULL)
			bad_usage("--zookeeper-path \"%s\": %s", hw_cfg.zk_path, why);
	}
	else if (zk_path_given || zk_timeout_given)
		bad_usage("%s needs --zookeeper CONNSTR",
				  zk_path_given ? "--zookeeper-path" : "--zookeeper-session-timeout");
	if (hw_cfg.name == NULL)
	{
		char		host[200];

		if (gethostname(host, sizeof(host)) != 0)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		snprintf(name, sizeof(name), "%s:%d", host, (int) getpid());
		hw_cfg.name = name;
	}
	else if (*hw_cfg.name == '\0' || strlen(hw_cfg.name) > 200)
		bad_usage("--name must have 1 to 200 bytes");
}

/* ------------------------------------------------------------------------
 * Signals: a self-pipe read by the loop
 * ------------------------------------------------------------------------ */

static void
on_signal(int sig)
{
	unsigned char b = (unsigned char) sig;
	int			save = errno;

	if (write(sig_pipe[1], &b, 1) < 0)
	{
		/* full: the loop will wake anyway */
	}
	errno = save;
}

static void
signals_init(void)
{
	struct sigaction sa;

	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
	{
		fprintf(stderr, "%s: pipe: %s\n", progname, strerror(errno));
		exit(EX_OSERR);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* ------------------------------------------------------------------------
 * A job's life
 * ------------------------------------------------------------------------ */

static int
jobs_in_use(void)
{
	int			n = 0;

	for (int i = 0; i < nslots; i++)
		if (jobs[i].phase != HW_FREE)
			n++;
	return n;
}

static int
jobs_in_phase(HwPhase phase)
{
	int			n = 0;

	for (int i = 0; i < nslots; i++)
		if (jobs[i].phase == phase)
			n++;
	return n;
}

#define jobs_running()	jobs_in_phase(HW_RUNNING)
#define jobs_queued()	jobs_in_phase(HW_QUEUED)

/*
 * Jobs that may be taken beyond --concurrency now: --prefetch while the
 * commands are short (PREFETCH_MAX_RUNTIME_USEC), none before the first
 * finished.  They wait as HW_QUEUED (heartbeated) and start as commands
 * finish: in pull mode the claim sent while the reports commit finds the
 * next jobs waiting instead of idle slots; in AMQP mode the deliveries are
 * started (start()) in batches instead of one call per freed slot, and the
 * broker's prefetch count follows the same rule (HwSource.ahead).
 */
static int
prefetch_now(void)
{
	if (runtime_avg < 0 || runtime_avg > PREFETCH_MAX_RUNTIME_USEC)
		return 0;
	return hw_cfg.prefetch;
}

/*
 * How many jobs may be taken now: free slots, and room under --concurrency
 * plus what may wait for a slot.  A job whose outcome is not recorded yet
 * still holds its place: it is running in the database until its report
 * commits, and the worker never holds more than --concurrency + what may
 * wait there (in AMQP mode start() is a statement of its own, and was
 * called before the report of the job it followed: TAP 089 saw 5 jobs
 * running with --concurrency 1 --prefetch 3).  reported: the jobs whose
 * report commits with the claim being sent (pull mode), whose places are
 * free for it.
 */
static int
take_room(int reported)
{
	int			nfree = reported;
	int			room = hw_cfg.concurrency + prefetch_now() - jobs_running() - jobs_queued() -
		(jobs_in_phase(HW_REPORTING) - reported);

	for (int i = 0; i < nslots; i++)
		if (jobs[i].phase == HW_FREE)
			nfree++;
	return nfree < room ? nfree : room;
}

static void
job_free(HwJob *job)
{
	hw_run_close(job);
	free(job->payload);
	free(job->failure);
	hw_buf_free(&job->out);
	memset(job, 0, sizeof(*job));
	job->phase = HW_FREE;
	job->fd_in = job->fd_out = job->fd_err = -1;
}

static void
job_start(HwJob *job, int64_t now)
{
	job->phase = HW_RUNNING;
	job->fd_in = job->fd_out = job->fd_err = -1;
	/* "started (pid N)" is logged when a spawner thread started it */
	if (!hw_run_start(job))
		hw_log("WARNING", "job %lld: cannot run command \"%s\": %s",
			   (long long) job->id, hw_cfg.argv[0], strerror(job->exec_errno));
	job->deadline = job->started + (int64_t) (job->timeout_s * 1e6);
	/* a job that waited queued keeps the heartbeats it had (its lease is older) */
	if (job->next_heartbeat == 0 ||
		job->next_heartbeat > job->started + (int64_t) (job->lease_s * 1e6 / 3))
		job->next_heartbeat = job->started + (int64_t) (job->lease_s * 1e6 / 3);
}

/* Queued jobs into the free room under --concurrency, oldest first. */
static void
start_queued(int64_t now)
{
	int			room = hw_cfg.concurrency - jobs_running();

	while (room > 0)
	{
		HwJob	   *next = NULL;

		for (int i = 0; i < nslots; i++)
			if (jobs[i].phase == HW_QUEUED && (next == NULL || jobs[i].taken < next->taken))
				next = &jobs[i];
		if (next == NULL)
			return;
		job_start(next, now);
		room--;
	}
}

/*
 * Jobs just taken: they wait as HW_QUEUED (their leases kept by heartbeats)
 * until start_queued() gives them room.
 */
static void
jobs_taken(HwJob **taken, int n, int64_t now)
{
	for (int i = 0; i < n; i++)
	{
		HwJob	   *job = taken[i];

		job->phase = HW_QUEUED;
		job->taken = ++take_seq;
		job->fd_in = job->fd_out = job->fd_err = -1;
		job->next_heartbeat = now + (job->lease_s > 0.3 ? (int64_t) (job->lease_s * 1e6 / 3) : 100000);
	}
	start_queued(now);
}

/* The command finished: the outcome waits to be reported. */
static void
job_finished(HwJob *job, int64_t now)
{
	int64_t		ran = now - job->started;

	last_finish = now;
	/* the moving average of the last ~8 run times */
	runtime_avg = runtime_avg < 0 ? ran : runtime_avg + (ran - runtime_avg) / 8;
	if (job->abandoned)
	{
		hw_log("INFO", "job %lld: its lease is gone; nothing reported", (long long) job->id);
		hw_source->settle(hw_source, job, false);
		job_free(job);
		return;
	}
	job->failure = hw_run_failure(job);
	job->phase = HW_REPORTING;
	job->reporting_since = now;
	job->next_report = now;
	if (job->failure)
		hw_log("INFO", "job %lld attempt %d: failed after %.3f s: %s", (long long) job->id,
			   job->attempt, (double) (now - job->started) / 1e6, job->failure);
	else
		hw_log("INFO", "job %lld attempt %d: succeeded after %.3f s", (long long) job->id,
			   job->attempt, (double) (now - job->started) / 1e6);
}

static void
job_report(HwJob *job, int64_t now)
{
	HwDbResult	r;

	r = job->failure ? hw_report_fail(job, job->failure, true) : hw_report_complete(job);
	switch (r)
	{
		case HW_DB_OK:
		case HW_DB_STALE:
			hw_source->settle(hw_source, job, r == HW_DB_OK);
			job_free(job);
			return;
		case HW_DB_DOWN:
			{
				int64_t		until;

				(void) hw_db_breaker(&until);
				job->next_report = until > now ? until : now + 100000;
			}
			return;
		case HW_DB_ERROR:
			if (++job->report_tries >= MAX_REPORT_TRIES)
			{
				hw_log("WARNING", "job %lld: report refused %d times; dropped (the job runs again after its lease)",
					   (long long) job->id, job->report_tries);
				hw_source->settle(hw_source, job, false);
				job_free(job);
				return;
			}
			job->next_report = now + 1000000;
			return;
	}
}


/*
 * The successes due are reported in one statement (one commit for all:
 * with many short jobs the commits, not the commands, would set the pace),
 * sent without waiting: the loop starts and reaps commands while the
 * server commits, and cycle_done() settles them when the outcome comes.
 * Sources with fetch_sql (pull) put the claim for the room there is then
 * (counting the slots the successes free) into the same transaction.  A
 * refused statement: each success is reported by itself (job_report),
 * which says which one is refused.
 */
static bool cycle_on = false;	/* a statement sent, its outcome to come */
static int	cycle_max = 0;		/* jobs it claims */
static int	cycle_n = 0;		/* successes it reports */

/*
 * A success waits at most this long for others to be reported with it
 * while commands still run (fewer, larger transactions: on a busy machine
 * the server's CPU per commit sets the pace as much as the commit's wait).
 */
#define BATCH_WAIT_USEC		2000

/*
 * -1: the database is down; 0: nothing to send (*hold_until: when the
 * successes held back for a larger batch go anyway); 1: sent; 2: nothing
 * to report, and the source had nothing to take.
 */
static int
cycle_send(int64_t now, bool claim, HwJob **batch, int64_t *hold_until)
{
	int			n = 0;
	int64_t		oldest = now;
	char	   *then = NULL;
	HwDbResult	r;

	for (int i = 0; i < nslots; i++)
	{
		HwJob	   *job = &jobs[i];

		if (job->phase == HW_REPORTING && job->failure == NULL && !job->report_alone &&
			!job->sending && now >= job->next_report)
		{
			batch[n++] = job;
			if (job->reporting_since < oldest)
				oldest = job->reporting_since;
		}
	}
	/* more commands about to finish: report them together (up to BATCH_WAIT_USEC) */
	if (n > 0 && n < (hw_cfg.concurrency + 1) / 2 && !draining && jobs_running() > 0 &&
		now - oldest < BATCH_WAIT_USEC)
	{
		*hold_until = oldest + BATCH_WAIT_USEC;
		return 0;
	}
	cycle_max = claim ? take_room(n) : 0;
	if (n == 0 && cycle_max == 0)
		return 0;
	if (cycle_max > 0 && (then = hw_source->fetch_sql(hw_source, cycle_max)) == NULL)
	{
		if (!hw_db_up())
			return -1;
		hw_log("FATAL", "out of memory");
		exit(70);
	}
	if (then != NULL && then[0] == '\0')
	{
		/* nothing to take now (AMQP: no delivery waits) */
		free(then);
		then = NULL;
		cycle_max = 0;
		if (n == 0)
			return 2;
	}
	r = hw_report_send(batch, n, then);
	free(then);
	if (r != HW_DB_OK)
	{
		/* not sent: what the source took for it waits again */
		if (cycle_max > 0 && hw_source->fetch_failed)
			hw_source->fetch_failed(hw_source, n == 0, true);
		return -1;
	}
	for (int i = 0; i < n; i++)
		batch[i]->sending = true;
	cycle_n = n;
	cycle_on = true;
	return 1;
}

/* The sent statement's outcome: settle the successes, start the jobs claimed. */
static void
cycle_done(int64_t now, HwJob **fetch_into, bool *wake, int64_t *next_fetch)
{
	HwDbResult	r;
	PGresult   *res = NULL;
	char	   *err = NULL;
	int			got = 0;
	int			nfree = 0;

	if (!cycle_on || !hw_db_sent_result(&r, &res, &err))
		return;
	cycle_on = false;
	if (r == HW_DB_OK && cycle_n > 0 && hw_source->settle_batch)
		hw_source->settle_batch(hw_source, true);
	for (int i = 0; i < nslots; i++)
	{
		HwJob	   *job = &jobs[i];

		if (!job->sending)
			continue;
		job->sending = false;
		if (r == HW_DB_OK)
		{
			hw_source->settle(hw_source, job, true);
			job_free(job);
		}
		else if (r != HW_DB_DOWN)
			job->report_alone = true;	/* by itself: which one is refused */
	}
	if (r == HW_DB_OK && cycle_n > 0 && hw_source->settle_batch)
		hw_source->settle_batch(hw_source, false);
	if (r == HW_DB_OK && cycle_max > 0)
	{
		for (int i = 0; i < nslots; i++)
			if (jobs[i].phase == HW_FREE)
				fetch_into[nfree++] = &jobs[i];
		got = hw_source->fetch_take(hw_source, res, fetch_into,
									nfree < cycle_max ? nfree : cycle_max, wake);
		now = hw_now();
		jobs_taken(fetch_into, got, now);
		*next_fetch = now + hw_cfg.poll_usec;
	}
	else if (r == HW_DB_DOWN && cycle_max > 0)
	{
		int64_t		until;

		if (hw_source->fetch_failed)
			hw_source->fetch_failed(hw_source, cycle_n == 0, true);
		*wake = false;
		*next_fetch = hw_db_breaker(&until) == HW_BREAKER_OPEN && until > now ?
			until : now + hw_cfg.poll_usec;
	}
	else if (r != HW_DB_OK && cycle_max > 0)
	{
		if (hw_source->fetch_failed)
			hw_source->fetch_failed(hw_source, cycle_n == 0, false);
		if (cycle_n == 0)
		{
			hw_log("WARNING", "taking jobs of queue \"%s\" failed: %s", hw_cfg.queue, err ? err : "");
			*next_fetch = now + hw_cfg.poll_usec;
		}
		else
		{
			hw_log("INFO", "%d completions and the taking of jobs in one transaction refused (%s); reporting them one by one",
				   cycle_n, err ? err : "");
			*wake = true;		/* the jobs again, once they are reported */
		}
	}
	PQclear(res);
	free(err);
}

static void
job_heartbeat(HwJob *job, int64_t now)
{
	switch (hw_report_heartbeat(job))
	{
		case HW_DB_OK:
		case HW_DB_ERROR:
			break;
		case HW_DB_STALE:
			if (job->phase == HW_QUEUED)
			{
				hw_log("WARNING", "job %lld: lease lost (cancelled, or expired and given away) before it started; dropped",
					   (long long) job->id);
				hw_source->settle(hw_source, job, false);
				job_free(job);
				return;
			}
			hw_log("WARNING", "job %lld: lease lost (cancelled, or expired and given away): killing its command",
				   (long long) job->id);
			job->abandoned = true;
			hw_run_kill(job, SIGKILL);
			break;
		case HW_DB_DOWN:
			job->next_heartbeat = now + 200000;
			return;
	}
	/* a third of the lease: two chances before it ends */
	job->next_heartbeat = now + (job->lease_s > 0.3 ? (int64_t) (job->lease_s * 1e6 / 3) : 100000);
}

static void
job_timers(HwJob *job, int64_t now)
{
	if (job->exited || job->pid <= 0)
		return;
	if (!job->timed_out && now >= job->deadline)
	{
		job->timed_out = true;
		hw_log("WARNING", "job %lld: timed out after %.3f s: SIGTERM to process group %d",
			   (long long) job->id, job->timeout_s, (int) job->pid);
		hw_run_kill(job, SIGTERM);
		job->kill_at = now + hw_cfg.kill_grace_usec;
	}
	if (job->kill_at != 0 && now >= job->kill_at)
	{
		hw_log("WARNING", "job %lld: still running %.3f s after SIGTERM: SIGKILL to process group %d",
			   (long long) job->id, (double) hw_cfg.kill_grace_usec / 1e6, (int) job->pid);
		hw_run_kill(job, SIGKILL);
		job->kill_at = 0;
	}
}

/* ------------------------------------------------------------------------
 * Health
 * ------------------------------------------------------------------------ */

static int
health_report(char *body, size_t size)
{
	int64_t		now = hw_now();
	int			in_use = jobs_running();
	bool		db_ok = hw_db_up();
	bool		saturated = in_use >= hw_cfg.concurrency &&
		(hw_source->waiting == NULL || hw_source->waiting(hw_source) > 0 || hw_cfg.amqp == NULL);
	int64_t		since = last_finish > saturated_since ? last_finish : saturated_since;
	bool		progress_ok = !saturated || now - since < hw_cfg.stall_usec;
	int64_t		until;
	HwBreakerState b = hw_db_breaker(&until);
	const char *bname = b == HW_BREAKER_CLOSED ? "closed" : b == HW_BREAKER_OPEN ? "open" : "half-open";
	char		zk[2048];
	bool		zk_ok = hw_zk_health(zk, sizeof(zk));
	char		src[1024] = "";
	bool		src_ok = hw_source->health ? hw_source->health(hw_source, src, sizeof(src)) : true;
	int			waiting = hw_source->waiting ? hw_source->waiting(hw_source) : -1;
	char		failed[96] = "";
	bool		ok = db_ok && progress_ok && zk_ok && src_ok;

	if (!db_ok)
		strcat(failed, "\"database\"");
	if (!progress_ok)
		strcat(strcat(failed, failed[0] ? ", " : ""), "\"progress\"");
	if (!zk_ok)
		strcat(strcat(failed, failed[0] ? ", " : ""), "\"zookeeper\"");
	if (!src_ok)
		strcat(strcat(failed, failed[0] ? ", " : ""), "\"broker\"");
	snprintf(body, size,
			 "{\"status\": \"%s\", \"failed\": [%s],"
			 " \"checks\": {\"database\": {\"ok\": %s, \"breaker\": \"%s\"},"
			 " \"progress\": {\"ok\": %s, \"running\": %d, \"concurrency\": %d,"
			 " \"waiting\": %d, \"seconds_since_last_finish\": %.3f}%s%s%s%s},"
			 " \"draining\": %s}\n",
			 ok ? "ok" : "unavailable", failed,
			 db_ok ? "true" : "false", bname,
			 progress_ok ? "true" : "false", in_use, hw_cfg.concurrency, waiting,
			 last_finish ? (double) (now - last_finish) / 1e6 : -1.0,
			 zk[0] ? ", " : "", zk, src[0] ? ", " : "", src,
			 draining ? "true" : "false");
	return ok ? 200 : 503;
}

/* ------------------------------------------------------------------------
 * The loop
 * ------------------------------------------------------------------------ */

static void
kill_all(void)
{
	int64_t		now = hw_now();

	for (int i = 0; i < nslots; i++)
	{
		HwJob	   *job = &jobs[i];

		if (job->phase == HW_RUNNING)
		{
			/* (one still being spawned is killed as soon as its pid is known) */
			job->stopping = true;
			hw_run_kill(job, SIGKILL);
		}
		else if (job->phase == HW_QUEUED)
		{
			/* never started: its attempt fails at once and is retried */
			job->failure = strdup("the worker stopped before starting the command");
			job->phase = HW_REPORTING;
			job->reporting_since = job->next_report = now;
			if (job->failure == NULL)
			{
				hw_log("FATAL", "out of memory");
				exit(70);
			}
		}
	}
}

/* Returns the exit status. */
static int
run_loop(void)
{
	struct pollfd *pfd;
	HwJob	  **fetch_into;
	int			npfd_max = 5 + 3 * nslots + 1 + HW_HEALTH_MAX_CLIENTS;
	bool		wake = true;	/* look for jobs now */
	bool		async = hw_source->fetch_sql != NULL;	/* see cycle_send() */
	int64_t		next_fetch = 0;
	int64_t		drain_started = 0;
	int			stop_signals = 0;

	pfd = calloc((size_t) npfd_max, sizeof(struct pollfd));
	fetch_into = calloc((size_t) nslots, sizeof(HwJob *));
	if (pfd == NULL || fetch_into == NULL)
	{
		hw_log("FATAL", "out of memory");
		return EX_OSERR;
	}

	for (;;)
	{
		int64_t		now = hw_now();
		int64_t		wake_at = now + 1000000;
		int			nfree = 0;
		int			room;
		int			npfd = 0;
		int			db_slot = -1;
		int			zk_slot = -1;
		int			sent_slot = -1;
		int			spawn_slot = -1;
		bool		fetch_ok;
		int64_t		hold_until = 0;	/* successes held back for a batch until then */
		int			health_first = -1;
		short		zk_events;
		int			zk_fd;
		int			rc;

		/* ZooKeeper: what arrived, timers, the registration; now registered: look for jobs */
		if (hw_zk_process())
			wake = true;

		/* commands started; children that exited; jobs whose command finished; reports */
		hw_run_spawned();
		hw_run_reap(jobs, nslots);
		for (int i = 0; i < nslots; i++)
			if (jobs[i].phase == HW_RUNNING && hw_run_done(&jobs[i], now))
				job_finished(&jobs[i], now);
		start_queued(now);
		cycle_done(now, fetch_into, &wake, &next_fetch);
		for (int i = 0; i < nslots; i++)
		{
			HwJob	   *job = &jobs[i];

			/* one by one: failures, and successes a batch could not record */
			if (job->phase == HW_REPORTING && now >= job->next_report && !job->sending &&
				(job->failure != NULL || job->report_alone || !hw_db_up()))
				job_report(job, now);
			if (job->phase == HW_RUNNING && !job->exited && job->exec_errno == 0)
			{
				if (!job->abandoned && now >= job->next_heartbeat)
					job_heartbeat(job, now);
				job_timers(job, now);
			}
			else if (job->phase == HW_QUEUED && now >= job->next_heartbeat)
				job_heartbeat(job, now);
		}
		if (hw_db_fatal_config())
		{
			hw_log("FATAL", "the server refused this worker's setup: %s", hw_db_fatal_config());
			kill_all();
			return EX_CONFIG;
		}

		/* stopping */
		if (draining)
		{
			bool		only_reports = true;
			int			in_use = 0;

			for (int i = 0; i < nslots; i++)
				if (jobs[i].phase != HW_FREE)
				{
					in_use++;
					if (jobs[i].phase != HW_REPORTING ||
						now - jobs[i].reporting_since < DRAIN_REPORT_LIMIT_USEC)
						only_reports = false;
				}
			if (in_use == 0)
			{
				hw_log("INFO", "drained: every job finished and reported; exiting");
				return EX_OK;
			}
			if (only_reports && now - drain_started >= DRAIN_REPORT_LIMIT_USEC)
			{
				for (int i = 0; i < nslots; i++)
					if (jobs[i].phase == HW_REPORTING)
						hw_log("ERROR", "job %lld: outcome not reported (database unreachable); it runs again after its lease",
							   (long long) jobs[i].id);
				return EX_TEMPFAIL;
			}
		}

		/* AMQP: the prefetch count follows the rule of prefetch_now() */
		if (hw_source->ahead && !draining)
			hw_source->ahead(hw_source, prefetch_now());

		/*
		 * the source's own timers (AMQP: reconnect, heartbeats, deliveries
		 * to start again), handled now (fetch() of none): a start sent with
		 * the reports may still be out, and the loop would go round with
		 * poll(0) until it is back
		 */
		if (hw_source->next_wake && !draining && hw_source->next_wake(hw_source) <= now)
		{
			(void) hw_source->fetch(hw_source, fetch_into, 0);
			if (take_room(0) > 0)
				wake = true;
		}

		/* take jobs */
		room = take_room(0);
		for (int i = 0; i < nslots && nfree < room; i++)
			if (jobs[i].phase == HW_FREE)
				fetch_into[nfree++] = &jobs[i];
		/*
		 * fetch() (AMQP's start(), a call the loop waits for) while jobs
		 * taken ahead still wait: only for half of --prefetch or more, not
		 * for each slot that frees
		 */
		fetch_ok = nfree > 0 && !(jobs_queued() > 0 && nfree < (hw_cfg.prefetch + 1) / 2);
		if (async && (cycle_on || hw_db_up()))
		{
			/* the reports and the claim, sent; the loop goes on meanwhile */
			if (!cycle_on)
			{
				bool		claim = !draining && (wake || now >= next_fetch) && hw_zk_may_claim();
				int			rc = cycle_send(now, claim, fetch_into, &hold_until);

				if (rc > 0 && claim)
					wake = false;
				else if (rc == 2)
				{
					/* nothing waits: the source's fd or timers say when */
					wake = false;
					next_fetch = now + hw_cfg.poll_usec;
				}
				else if (rc < 0 && claim)
				{
					int64_t		until;

					next_fetch = hw_db_breaker(&until) == HW_BREAKER_OPEN && until > now ?
						until : now + hw_cfg.poll_usec;
					wake = false;
				}
				/* fetch_into was the batch: the free slots again */
				nfree = 0;
				for (int i = 0; i < nslots && nfree < room; i++)
					if (jobs[i].phase == HW_FREE)
						fetch_into[nfree++] = &jobs[i];
			}
		}
		else if (!draining && fetch_ok && (wake || now >= next_fetch) && hw_zk_may_claim())
		{
			int			asked = nfree;
			int			got = hw_source->fetch(hw_source, fetch_into, asked);

			now = hw_now();
			if (got > 0)
			{
				/* (a claim may take --prefetch jobs more than there is room to run) */
				jobs_taken(fetch_into, got, now);
				nfree -= got;
			}
			/* a full batch: more may wait; look again as soon as a slot is free */
			wake = got > 0 && got == asked;
			if (got < 0)
			{
				int64_t		until;

				wake = false;
				next_fetch = hw_db_breaker(&until) == HW_BREAKER_OPEN && until > now ?
					until : now + hw_cfg.poll_usec;
			}
			else
				next_fetch = now + hw_cfg.poll_usec;
			if (hw_db_fatal_config())
				continue;
		}
		/* not allowed to claim yet (ZooKeeper): keep the database connection ready */
		else if (!draining && !hw_zk_may_claim() && !hw_db_up())
		{
			int64_t		until;

			if (hw_db_breaker(&until) != HW_BREAKER_OPEN || now >= until)
				(void) hw_db_get();
		}
		/* other sources: the reports of the successes, sent (settled when done) */
		if (!async && !cycle_on && hw_db_up())
			(void) cycle_send(now, false, fetch_into, &hold_until);

		/*
		 * A NOTIFY that came during a database call above was read by libpq
		 * then: the socket will not wake us for it.
		 */
		if (!draining && hw_cfg.amqp == NULL && hw_source->readable(hw_source))
		{
			wake = true;
			if (nfree > 0)
				continue;
		}

		if (nfree == 0 && saturated_since == 0)
			saturated_since = now;
		else if (nfree > 0)
			saturated_since = 0;

		/* what to wait for, and until when */
		if (!draining && (async ? nfree > 0 : fetch_ok) && hw_zk_may_claim() && !cycle_on)
		{
			int64_t		t = wake ? now : next_fetch;

			/*
			 * the claim goes with the successes held back for a batch
			 * (cycle_send), not before them (the loop went round with
			 * poll(0) until then: 146,000 polls in 3 s, 40 per job, with
			 * 16 commands running `true`)
			 */
			if (async && hold_until > t)
				t = hold_until;
			if (t < wake_at)
				wake_at = t;
		}
		if (hold_until != 0 && hold_until < wake_at)
			wake_at = hold_until > now ? hold_until : now;
		/* the statement's outcome was read with a NOTIFY above: take it now */
		if (cycle_on && !hw_db_sent_busy())
			wake_at = now;
		if (hw_source->next_wake && !draining)
		{
			int64_t		t = hw_source->next_wake(hw_source);

			if (t < wake_at)
				wake_at = t > now ? t : now;
		}
		pfd[npfd].fd = sig_pipe[0];
		pfd[npfd++].events = POLLIN;
		if (hw_source->fd(hw_source) >= 0)
		{
			db_slot = npfd;
			pfd[npfd].fd = hw_source->fd(hw_source);
			pfd[npfd++].events = POLLIN;
		}
		/* the result of the statement sent, when the source's fd is not the connection's */
		if (cycle_on && hw_db_sent_busy() && hw_db_socket() >= 0 &&
			(db_slot < 0 || pfd[db_slot].fd != hw_db_socket()))
		{
			sent_slot = npfd;
			pfd[npfd].fd = hw_db_socket();
			pfd[npfd++].events = POLLIN;
		}
		if (hw_run_fd() >= 0)
		{
			spawn_slot = npfd;
			pfd[npfd].fd = hw_run_fd();
			pfd[npfd++].events = POLLIN;
		}
		zk_fd = hw_zk_poll(&zk_events, &wake_at);
		if (zk_fd >= 0)
		{
			zk_slot = npfd;
			pfd[npfd].fd = zk_fd;
			pfd[npfd++].events = zk_events;
		}
		for (int i = 0; i < nslots; i++)
		{
			HwJob	   *job = &jobs[i];

			if (job->phase == HW_RUNNING)
			{
				if (job->fd_in >= 0)
				{
					pfd[npfd].fd = job->fd_in;
					pfd[npfd++].events = POLLOUT;
				}
				if (job->fd_out >= 0)
				{
					pfd[npfd].fd = job->fd_out;
					pfd[npfd++].events = POLLIN;
				}
				if (job->fd_err >= 0)
				{
					pfd[npfd].fd = job->fd_err;
					pfd[npfd++].events = POLLIN;
				}
				if (!job->exited && job->exec_errno == 0)
				{
					if (!job->abandoned && job->next_heartbeat < wake_at)
						wake_at = job->next_heartbeat;
					if (!job->timed_out && job->deadline < wake_at)
						wake_at = job->deadline;
					if (job->kill_at != 0 && job->kill_at < wake_at)
						wake_at = job->kill_at;
				}
				if (job->exited && job->exited_at + 1000000 < wake_at)
					wake_at = job->exited_at + 1000000;
				if (job->exec_errno != 0)
					wake_at = now;
			}
			else if (job->phase == HW_REPORTING && !cycle_on)
			{
				/* (else when the statement sent is done) */
				int64_t		t = job->next_report;

				/* a success held back for a batch goes with it (cycle_send) */
				if (job->failure == NULL && !job->report_alone && hold_until > t)
					t = hold_until;
				if (t < wake_at)
					wake_at = t;
			}
			else if (job->phase == HW_QUEUED && job->next_heartbeat < wake_at)
				wake_at = job->next_heartbeat;
		}
		if (have_health)
		{
			health_first = npfd;
			pfd[npfd].fd = health.listen_fd;
			pfd[npfd++].events = POLLIN;
			for (int i = 0; i < HW_HEALTH_MAX_CLIENTS; i++)
			{
				pfd[npfd].fd = health.client_fd[i];		/* -1 is ignored by poll */
				pfd[npfd++].events = POLLIN;
				if (health.client_fd[i] >= 0 && health.client_deadline[i] < wake_at)
					wake_at = health.client_deadline[i];
			}
		}

		hw_log_flush();
		rc = poll(pfd, (nfds_t) npfd, wake_at > now ? (int) ((wake_at - now + 999) / 1000) : 0);
		if (rc < 0 && errno != EINTR)
		{
			hw_log("FATAL", "poll: %s", strerror(errno));
			kill_all();
			return EX_OSERR;
		}
		if (rc <= 0)
			continue;

		/* signals */
		if (pfd[0].revents & POLLIN)
		{
			unsigned char sigs[64];
			ssize_t		n = read(sig_pipe[0], sigs, sizeof(sigs));

			for (ssize_t i = 0; i < n; i++)
			{
				if (sigs[i] == SIGHUP)
				{
					if (!log_open())
						hw_log("ERROR", "cannot reopen log file \"%s\": %s; logging on",
							   hw_cfg.log_path, strerror(errno));
					else
						hw_log("INFO", "log file reopened");
				}
				else if (sigs[i] == SIGTERM || sigs[i] == SIGINT)
				{
					stop_signals++;
					if (stop_signals == 1)
					{
						draining = true;
						drain_started = hw_now();
						if (hw_source->stop)
							hw_source->stop(hw_source);
						hw_log("INFO", "%s: taking no more jobs; waiting for %d running or unreported",
							   sigs[i] == SIGTERM ? "SIGTERM" : "SIGINT", jobs_in_use());
					}
					else if (stop_signals == 2)
					{
						hw_log("INFO", "second stop signal: killing the running commands");
						kill_all();
					}
				}
			}
		}
		/* a NOTIFY, or the connection closed */
		if (db_slot >= 0 && pfd[db_slot].revents)
		{
			if (hw_source->readable(hw_source))
				wake = true;
		}
		if (sent_slot >= 0 && pfd[sent_slot].revents)
			(void) hw_db_consume_notifies();	/* reads the result */
		if (zk_slot >= 0 && pfd[zk_slot].revents)
			hw_zk_ready(pfd[zk_slot].revents);
		if (spawn_slot >= 0 && pfd[spawn_slot].revents)
			hw_run_spawned();
		/* the commands' pipes */
		for (int k = 1; k < npfd; k++)
		{
			if (k == db_slot || k == zk_slot || k == sent_slot || k == spawn_slot ||
				(health_first >= 0 && k >= health_first) ||
				pfd[k].revents == 0)
				continue;
			for (int i = 0; i < nslots; i++)
			{
				HwJob	   *job = &jobs[i];

				if (job->phase != HW_RUNNING)
					continue;
				if (pfd[k].fd == job->fd_in)
					hw_run_write_stdin(job);
				else if (pfd[k].fd == job->fd_out || pfd[k].fd == job->fd_err)
					hw_run_read(job, pfd[k].fd);
				else
					continue;
				break;
			}
		}
		if (have_health)
		{
			if (pfd[health_first].revents & POLLIN)
				hw_health_accept(&health);
			for (int i = 0; i < HW_HEALTH_MAX_CLIENTS; i++)
				if (pfd[health_first + 1 + i].revents && health.client_fd[i] >= 0 &&
					health.client_fd[i] == pfd[health_first + 1 + i].fd)
					hw_health_io(&health, i, health_report);
			hw_health_expire(&health, hw_now());
		}
	}
}

/* Descriptors 0-2 must be open, or pipes would land there. */
static void
std_fds_open(void)
{
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
			exit(EX_OSERR);
}

int
main(int argc, char **argv)
{
	char		why[256];
	int			status;

	std_fds_open();
	parse_args(argc, argv);

	if (!log_open())
	{
		fprintf(stderr, "%s: cannot open log file \"%s\": %s\n", progname, hw_cfg.log_path,
				strerror(errno));
		return EX_CANTCREAT;
	}
	if (!command_found(hw_cfg.argv[0], why, sizeof(why)))
	{
		fprintf(stderr, "%s: cannot run command \"%s\": %s\n", progname, hw_cfg.argv[0], why);
		if (log_fp)
			hw_log("FATAL", "cannot run command \"%s\": %s", hw_cfg.argv[0], why);
		return EX_UNAVAILABLE;
	}
	if (hw_cfg.health_port > 0)
	{
		char	   *err = NULL;

		if (hw_health_open(&health, hw_cfg.health_port, &err) < 0)
		{
			fprintf(stderr, "%s: cannot serve health on 127.0.0.1:%d: %s\n", progname,
					hw_cfg.health_port, err ? err : "?");
			return EX_UNAVAILABLE;
		}
		have_health = true;
	}
	signals_init();
	srandom((unsigned) (hw_now() ^ getpid()));
	if (!hw_zk_start())
	{
		fprintf(stderr, "%s: out of memory\n", progname);
		return EX_OSERR;
	}

		if (hw_cfg.amqp != NULL)
		hw_source = hw_source_amqp(amqp_urls, amqp_nurls, hw_cfg.queue, hw_cfg.amqp_queue_type,
								   hw_cfg.concurrency);
	else
		hw_source = hw_source_pull(hw_cfg.queue, hw_cfg.name, hw_cfg.listen);
	/*
	 * Twice --concurrency slots plus --prefetch, at most --concurrency
	 * commands running: a job whose outcome waits for the commit holds a
	 * slot, not the room of a command (see cycle_send()), and so does a
	 * job taken ahead (HW_QUEUED).
	 */
	nslots = 2 * hw_cfg.concurrency + hw_cfg.prefetch;
	jobs = calloc((size_t) nslots, sizeof(HwJob));
	if (jobs == NULL || hw_source == NULL)
	{
		fprintf(stderr, "%s: out of memory\n", progname);
		return EX_OSERR;
	}
	for (int i = 0; i < nslots; i++)
		job_free(&jobs[i]);

	hw_log("INFO", "hasched-worker %s: %s queue \"%s\", concurrency %d, worker \"%s\"%s",
		   HW_VERSION, hw_source->name, hw_cfg.queue, hw_cfg.concurrency, hw_cfg.name,
		   hw_cfg.amqp || hw_cfg.listen ? "" : ", polling only");
	if (have_health)
		hw_log("INFO", "health on http://127.0.0.1:%d/health", hw_cfg.health_port);

	status = run_loop();
	/* after the last report: the leader requeues whatever this name still holds */
	hw_zk_close();
	hw_db_close();
	hw_log("INFO", "exiting with status %d", status);
	hw_log_flush();
	return status;
}
