/*
 * bench/forkexec.c: the baseline of bench.pl's worker step: how fast this
 * machine forks, execs and reaps a command, N times, with C of them in
 * flight at once (fork + execvp + waitpid, as plainly as it can be done).
 *
 *	  forkexec N C COMMAND [ARG...]		prints: runs/s
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	long		n,
				c,
				started = 0,
				done = 0;
	struct timespec a,
				b;

	if (argc < 4 || (n = atol(argv[1])) <= 0 || (c = atol(argv[2])) <= 0)
	{
		fprintf(stderr, "usage: forkexec N C COMMAND [ARG...]\n");
		return 64;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	while (done < n)
	{
		while (started < n && started - done < c)
		{
			pid_t		p = fork();

			if (p < 0)
			{
				perror("fork");
				return 71;
			}
			if (p == 0)
			{
				execvp(argv[3], argv + 3);
				_exit(127);
			}
			started++;
		}
		if (wait(NULL) > 0)
			done++;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", n / ((double) (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9));
	return 0;
}
