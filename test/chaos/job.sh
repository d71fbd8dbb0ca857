#!/bin/sh
# Copyright: hasched contributors
#
# job.sh: the command hasched-worker runs for each pull job of the chaos
# suite: it notes the run (its effect outside the database, at least once by
# design), works 0.2 s, and returns the attempt it ran as its result (the
# checker compares it with the job's attempt: a result of another attempt
# would be a result recorded for a stale lease).
#
# IDENTIFICATION
#	test/chaos/job.sh
echo "$HASCHED_JOB_ID $HASCHED_ATTEMPT $HASCHED_WORKER $(date +%s.%N)" >> "$CHAOS_RUNS"
sleep 0.2
printf '{"attempt": %s}\n' "$HASCHED_ATTEMPT"
