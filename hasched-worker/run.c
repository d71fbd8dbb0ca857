/*-------------------------------------------------------------------------
 *
 * run.c
 *		Running a job's command: vfork and exec in its own process group, the
 *		payload on stdin and in the environment, stdout and stderr read
 *		through pipes, the process group killed on timeout, when the worker
 *		stops, or when the lease is lost; whatever the command left running
 *		in its group is killed when it exits.
 *
 * Spawner threads.  vfork() suspends its caller until the child has
 * exec'd, and on a busy machine the child waits for a CPU first: with 16
 * short commands running on 2 cores the worker's loop spent 430 us in each
 * vfork(), 78% of its time (4.29 s for 10,000 jobs), starting nothing else
 * and reaping nothing meanwhile.  So the vfork() happens in one of up to
 * HW_SPAWNERS threads; the loop prepares the pipes and the environment,
 * hands the request over and goes on, and takes the outcome (the pid, or
 * why the exec failed) from the done list when the threads' pipe wakes
 * it.  The threads do nothing else: no database, no log, all signals
 * blocked (the child sets its own mask before the exec).  A child that
 * exits before the loop knows its pid is left unreaped until it does (see
 * hw_run_reap).
 *
 * IDENTIFICATION
 *		hasched-worker/run.c
 *
 *-------------------------------------------------------------------------
 */
#include "hw.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* how long the pipes may stay open after the command exited */
#define DRAIN_AFTER_EXIT_USEC	1000000
/* environment strings are limited to 128 kB by the kernel */
#define MAX_ENV_PAYLOAD			(100 * 1024)
/* what an empty pipe takes without blocking: one page, the least it has */
#define PIPE_ONE_WRITE			4096
/* threads that vfork (see the header) */
#define HW_SPAWNERS				4

typedef struct SpawnReq
{
	HwJob	   *job;
	int			in_r;			/* the child's ends of the pipes */
	int			out_w;
	int			err_w;
	char	  **envp;
	HwBuf		env;			/* the strings envp points into */
	pid_t		pid;			/* the outcome: the child, or -1 */
	int			fork_errno;		/* vfork() failed */
	volatile int child_errno;	/* the exec failed (written by the child) */
	struct SpawnReq *next;
} SpawnReq;

static pthread_mutex_t spawn_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t spawn_cond = PTHREAD_COND_INITIALIZER;
static SpawnReq *spawn_todo;	/* FIFO: head, tail */
static SpawnReq *spawn_todo_tail;
static SpawnReq *spawn_done;
static int	spawn_pending = 0;	/* handed over, outcome not taken yet (loop only) */
static int	spawn_pipe[2] = {-1, -1};	/* a byte per outcome, read by the loop */
static int	spawners = 0;

static void
set_nonblock(int fd)
{
	int			fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		(void) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

void
hw_buf_free(HwBuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static void
buf_append(HwBuf *b, const char *p, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap : 4096;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->data = realloc(b->data, cap);
		if (b->data == NULL)
		{
			hw_log("FATAL", "out of memory");
			exit(70);
		}
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/*
 * The child's environment: the worker's, less any HASCHED_* variable, and
 * the job's.  Built in the parent (the child of vfork() must not
 * allocate); the strings live in env_buf until the command started.
 */
extern char **environ;

static __attribute__((noinline)) char **
job_environment(const HwJob *job, HwBuf *env_buf)
{
	size_t		n = 0;
	size_t		nvars = 0;
	char	  **envp;
	size_t	   *offs;
	size_t		k = 0;
	char		line[160];
	const char *const names[] = {
		"HASCHED_JOB_ID", "HASCHED_ATTEMPT", "HASCHED_PRIORITY", "HASCHED_TIMEOUT",
		"HASCHED_QUEUE", "HASCHED_TENANT", "HASCHED_WORKER", "HASCHED_PAYLOAD"
	};

	for (char **e = environ; *e; e++)
		n++;
	envp = malloc((n + 9) * sizeof(char *));
	offs = malloc(9 * sizeof(size_t));
	if (envp == NULL || offs == NULL)
	{
		hw_log("FATAL", "out of memory");
		exit(70);
	}
	for (char **e = environ; *e; e++)
		if (strncmp(*e, "HASCHED_", 8) != 0)
			envp[k++] = *e;
	env_buf->len = 0;
	for (int i = 0; i < 8; i++)
	{
		const char *val = line;

		switch (i)
		{
			case 0:
				snprintf(line, sizeof(line), "%lld", (long long) job->id);
				break;
			case 1:
				snprintf(line, sizeof(line), "%d", job->attempt);
				break;
			case 2:
				snprintf(line, sizeof(line), "%d", job->priority);
				break;
			case 3:
				snprintf(line, sizeof(line), "%.3f", job->timeout_s);
				break;
			case 4:
				val = hw_cfg.queue;
				break;
			case 5:
				val = job->tenant;
				break;
			case 6:
				val = hw_cfg.name;
				break;
			case 7:
				val = job->payload;
				if (strlen(val) > MAX_ENV_PAYLOAD)
					val = NULL;	/* too large: stdin only */
				break;
		}
		if (val == NULL)
			continue;
		offs[nvars++] = env_buf->len;
		buf_append(env_buf, names[i], strlen(names[i]));
		buf_append(env_buf, "=", 1);
		buf_append(env_buf, val, strlen(val));
		buf_append(env_buf, "", 1);	/* the NUL, kept */
	}
	for (size_t i = 0; i < nvars; i++)
		envp[k++] = env_buf->data + offs[i];
	envp[k] = NULL;
	free(offs);
	return envp;
}

/*
 * In the child of vfork(), until exec: only system calls, no allocation
 * (it shares the worker's memory).  Its own process group, killed with the
 * worker, default signal handling, stdio on the pipes, no other descriptor
 * of the worker.  An exec failure's errno goes to *exec_errno (shared).
 */
static void
child(pid_t parent, int in_r, int out_w, int err_w, char **envp, volatile int *exec_errno)
{
	struct sigaction dfl;
	sigset_t	none;

	(void) setpgid(0, 0);
	(void) prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);

	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	(void) sigaction(SIGPIPE, &dfl, NULL);
	(void) sigaction(SIGTERM, &dfl, NULL);
	(void) sigaction(SIGINT, &dfl, NULL);
	(void) sigaction(SIGHUP, &dfl, NULL);
	(void) sigaction(SIGCHLD, &dfl, NULL);
	sigemptyset(&none);
	(void) sigprocmask(SIG_SETMASK, &none, NULL);

	if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
		goto fail;
	/* everything else of the worker: the database, the health socket, the log */
	if (syscall(SYS_close_range, 3U, ~0U, 0) < 0)
	{
		for (int fd = 3; fd < 65536; fd++)
			(void) close(fd);
	}
	/* where the command was found at start; else (gone since, or a script
	 * without #!) what execvp does: PATH again, /bin/sh for ENOEXEC */
	if (hw_cfg.exec_path != NULL)
		execve(hw_cfg.exec_path, hw_cfg.argv, envp);
	execvpe(hw_cfg.argv[0], hw_cfg.argv, envp);
fail:
	*exec_errno = errno ? errno : ENOEXEC;
	_exit(127);
}

static void *
spawner_main(void *arg)
{
	pid_t		parent = getpid();

	for (;;)
	{
		SpawnReq   *r;
		char		b = 1;
		bool		first;

		pthread_mutex_lock(&spawn_lock);
		while (spawn_todo == NULL)
			pthread_cond_wait(&spawn_cond, &spawn_lock);
		r = spawn_todo;
		spawn_todo = r->next;
		if (spawn_todo == NULL)
			spawn_todo_tail = NULL;
		pthread_mutex_unlock(&spawn_lock);

		r->pid = vfork();
		if (r->pid == 0)
			child(parent, r->in_r, r->out_w, r->err_w, r->envp, &r->child_errno);
		r->fork_errno = r->pid < 0 ? errno : 0;

		/* the loop is woken by the first outcome; it takes all there are */
		pthread_mutex_lock(&spawn_lock);
		first = spawn_done == NULL;
		r->next = spawn_done;
		spawn_done = r;
		pthread_mutex_unlock(&spawn_lock);
		while (first && write(spawn_pipe[1], &b, 1) < 0 && errno == EINTR)
			;
	}
	return NULL;
}

/* The spawner threads, started with every signal blocked. */
static bool
spawners_start(void)
{
	sigset_t	all,
				old;

	if (pipe2(spawn_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return false;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (int i = 0; i < HW_SPAWNERS; i++)
	{
		pthread_t	t;

		if (pthread_create(&t, NULL, spawner_main, NULL) == 0)
		{
			pthread_detach(t);
			spawners++;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return spawners > 0;
}

/* The fd that is readable when spawns have an outcome (-1: none started). */
int
hw_run_fd(void)
{
	return spawn_pipe[0];
}

/*
 * Take the outcomes of the spawns: the commands that started get their
 * process group; those that could not get exec_errno (their job is done).
 */
void
hw_run_spawned(void)
{
	SpawnReq   *r;
	char		buf[256];

	if (spawn_pipe[0] < 0)
		return;
	while (read(spawn_pipe[0], buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&spawn_lock);
	r = spawn_done;
	spawn_done = NULL;
	pthread_mutex_unlock(&spawn_lock);
	while (r != NULL)
	{
		SpawnReq   *next = r->next;
		HwJob	   *job = r->job;

		spawn_pending--;
		close(r->in_r);
		close(r->out_w);
		close(r->err_w);
		free(r->envp);
		hw_buf_free(&r->env);
		if (r->pid < 0 || r->child_errno != 0)
		{
			job->exec_errno = r->pid < 0 ? r->fork_errno : r->child_errno;
			hw_run_close(job);
			hw_log("WARNING", "job %lld: cannot run command \"%s\": %s",
				   (long long) job->id, hw_cfg.argv[0], strerror(job->exec_errno));
			/* a child that failed to exec has exited: the reaper collects it */
		}
		else
		{
			/* the child set its group before its exec, which vfork() waited for */
			job->pid = r->pid;
			hw_log("INFO", "job %lld attempt %d: started (pid %d)", (long long) job->id,
				   job->attempt, (int) job->pid);
			if (job->stopping || job->abandoned)
				hw_run_kill(job, SIGKILL);
		}
		free(r);
		r = next;
	}
}

/*
 * Start the job's command: the pipes and the environment here, the vfork()
 * in a spawner thread (hw_run_spawned() takes the outcome).  False when it
 * could not be started: then job->exec_errno says why and the job is done
 * (nothing to wait for).
 *
 * vfork(): the spawner is suspended only until the child's exec, without
 * copying the worker's page tables (with many short jobs, fork() was most
 * of the worker's own time).
 */
bool
hw_run_start(HwJob *job)
{
	int			in[2] = {-1, -1},
				out[2] = {-1, -1},
				err[2] = {-1, -1};
	SpawnReq   *r;

	job->fd_in = job->fd_out = job->fd_err = -1;
	job->pid = 0;
	job->exited = false;
	job->exec_errno = 0;
	job->started = hw_now();
	if (spawners == 0 && !spawners_start())
	{
		job->exec_errno = errno ? errno : EAGAIN;
		return false;
	}
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 ||
		pipe2(err, O_CLOEXEC) < 0 || (r = calloc(1, sizeof(SpawnReq))) == NULL)
	{
		job->exec_errno = errno ? errno : ENOMEM;
		for (int i = 0; i < 2; i++)
		{
			if (in[i] >= 0)
				close(in[i]);
			if (out[i] >= 0)
				close(out[i]);
			if (err[i] >= 0)
				close(err[i]);
		}
		return false;
	}
	r->job = job;
	r->in_r = in[0];
	r->out_w = out[1];
	r->err_w = err[1];
	/* the strings stay in r->env until the outcome is taken */
	r->envp = job_environment(job, &r->env);
	job->fd_in = in[1];
	job->fd_out = out[0];
	job->fd_err = err[0];
	job->in_off = 0;
	/*
	 * A payload that an empty pipe surely holds (a page: the least a pipe
	 * has) is written now, and stdin closed: no poll for it.  A larger one
	 * goes as the command reads it, from the loop.  stdout and stderr stay
	 * blocking: the loop reads once each time poll says there is something
	 * (or the end), which never blocks.
	 */
	if (strlen(job->payload) <= PIPE_ONE_WRITE)
		hw_run_write_stdin(job);
	else
		set_nonblock(job->fd_in);

	spawn_pending++;
	pthread_mutex_lock(&spawn_lock);
	if (spawn_todo_tail)
		spawn_todo_tail->next = r;
	else
		spawn_todo = r;
	spawn_todo_tail = r;
	pthread_cond_signal(&spawn_cond);
	pthread_mutex_unlock(&spawn_lock);

	if (job->fd_in >= 0)
		hw_run_write_stdin(job);
	return true;
}

/* Write what the pipe takes of the payload; close stdin when it is all there. */
void
hw_run_write_stdin(HwJob *job)
{
	size_t		len = strlen(job->payload);

	while (job->fd_in >= 0 && job->in_off < len)
	{
		ssize_t		n = write(job->fd_in, job->payload + job->in_off, len - job->in_off);

		if (n > 0)
			job->in_off += (size_t) n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && errno == EAGAIN)
			return;
		else
			break;				/* EPIPE: the command does not read stdin */
	}
	if (job->fd_in >= 0)
	{
		close(job->fd_in);
		job->fd_in = -1;
	}
}

/*
 * fd of the job is readable (or hung up): take what is there, in one
 * read() (the fd blocks; a pipe holds 64 kB by default, as much as one read
 * takes, and what is left makes the next poll return at once).
 */
void
hw_run_read(HwJob *job, int fd)
{
	char		buf[65536];

	for (;;)
	{
		ssize_t		n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			close(fd);
			if (fd == job->fd_out)
				job->fd_out = -1;
			else
				job->fd_err = -1;
			return;
		}
		if (fd == job->fd_out)
		{
			size_t		room = hw_cfg.max_output > job->out.len ?
				hw_cfg.max_output - job->out.len : 0;

			if ((size_t) n > room)
				job->out_truncated = true;
			if (room > 0)
				buf_append(&job->out, buf, (size_t) n < room ? (size_t) n : room);
		}
		else
		{
			for (ssize_t i = 0; i < n; i++)
				job->err[(job->err_total + (size_t) i) % HW_STDERR_TAIL] = buf[i];
			job->err_total += (size_t) n;
		}
		return;
	}
}

/* Signal the command's process group (while its leader is not reaped). */
void
hw_run_kill(HwJob *job, int sig)
{
	if (job->pid > 0)
		(void) kill(-job->pid, sig);
}

/*
 * Collect the commands that exited.  Each is looked at before it is
 * reaped (WNOWAIT), so that its process group id cannot have been reused
 * when what it left running in the group is killed.
 */
void
hw_run_reap(HwJob *jobs, int njobs)
{
	for (;;)
	{
		siginfo_t	info;
		int			status;
		pid_t		pid;
		HwJob	   *job = NULL;

		memset(&info, 0, sizeof(info));
		if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 || info.si_pid == 0)
			return;
		pid = info.si_pid;
		for (int i = 0; i < njobs; i++)
			if (jobs[i].phase != HW_FREE && jobs[i].pid == pid)
				job = &jobs[i];
		if (job == NULL && spawn_pending > 0)
		{
			/* perhaps a spawn whose outcome is not taken yet: its turn comes */
			hw_run_spawned();
			for (int i = 0; i < njobs; i++)
				if (jobs[i].phase != HW_FREE && jobs[i].pid == pid)
					job = &jobs[i];
			if (job == NULL && spawn_pending > 0)
				return;
		}
		if (job != NULL)
			(void) kill(-pid, SIGKILL);
		if (waitpid(pid, &status, 0) < 0)
			continue;
		if (job != NULL)
		{
			job->status = status;
			job->exited = true;
			job->exited_at = hw_now();
			job->pid = 0;
		}
	}
}

/*
 * Has the job's command finished: exited and its output read (or a second
 * since it exited, for a descendant that escaped its group with the pipes)?
 */
bool
hw_run_done(HwJob *job, int64_t now)
{
	if (job->exec_errno != 0)
		return true;
	if (!job->exited)
		return false;
	if ((job->fd_out < 0 && job->fd_err < 0) ||
		now - job->exited_at >= DRAIN_AFTER_EXIT_USEC)
	{
		hw_run_close(job);
		return true;
	}
	return false;
}

void
hw_run_close(HwJob *job)
{
	if (job->fd_in >= 0)
		close(job->fd_in);
	if (job->fd_out >= 0)
		close(job->fd_out);
	if (job->fd_err >= 0)
		close(job->fd_err);
	job->fd_in = job->fd_out = job->fd_err = -1;
}

/*
 * Why the command failed, for fail(): NULL when it succeeded (exit 0).
 * The text names the exit status or signal, or the timeout, then the tail
 * of stderr.  malloc'd.
 */
char *
hw_run_failure(const HwJob *job)
{
	char		head[512];
	size_t		tail_len = job->err_total < HW_STDERR_TAIL ? job->err_total : HW_STDERR_TAIL;
	size_t		start = job->err_total < HW_STDERR_TAIL ? 0 : job->err_total % HW_STDERR_TAIL;
	char	   *msg;
	size_t		hl;

	if (job->exec_errno != 0)
		snprintf(head, sizeof(head), "cannot run command \"%s\": %s",
				 hw_cfg.argv[0], strerror(job->exec_errno));
	else if (job->timed_out)
		snprintf(head, sizeof(head), "timed out after %.3f s: process group killed",
				 job->timeout_s);
	else if (job->stopping)
		snprintf(head, sizeof(head), "stopped: the worker was told to stop at once");
	else if (WIFEXITED(job->status) && WEXITSTATUS(job->status) == 0)
		return NULL;
	else if (WIFEXITED(job->status))
		snprintf(head, sizeof(head), "command exited with status %d", WEXITSTATUS(job->status));
	else if (WIFSIGNALED(job->status))
		snprintf(head, sizeof(head), "command killed by signal %d (%s)",
				 WTERMSIG(job->status), strsignal(WTERMSIG(job->status)));
	else
		snprintf(head, sizeof(head), "command ended with wait status %d", job->status);

	hl = strlen(head);
	msg = malloc(hl + tail_len + 32);
	if (msg == NULL)
		return strdup(head);
	memcpy(msg, head, hl);
	if (tail_len > 0)
	{
		size_t		k = hl;

		memcpy(msg + k, "; stderr: ", 10);
		k += 10;
		if (job->err_total > HW_STDERR_TAIL)
		{
			memcpy(msg + k, "...", 3);
			k += 3;
		}
		for (size_t i = 0; i < tail_len; i++)
			msg[k + i] = job->err[(start + i) % HW_STDERR_TAIL];
		k += tail_len;
		while (k > hl && (msg[k - 1] == '\n' || msg[k - 1] == '\r'))
			k--;
		msg[k] = '\0';
		hw_utf8_clean(msg, k);
	}
	else
		msg[hl] = '\0';
	return msg;
}
