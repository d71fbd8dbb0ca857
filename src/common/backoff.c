/*-------------------------------------------------------------------------
 *
 * backoff.c
 *		The retry delay after a failed attempt: exponential with a cap and
 *		"equal jitter".
 *
 * Plain C (no backend state): also linked by hasched-worker and the unit
 * tests.
 *
 * IDENTIFICATION
 *		src/common/backoff.c
 *
 *-------------------------------------------------------------------------
 */
#include "hs_common.h"

#include <math.h>

/*
 * Delay before the attempt after `attempt` failed ones: the exponential
 * step d = min(cap, base * 2^(attempt-1)), then "equal jitter": half of d
 * fixed, the other half scaled by jitter in [0, 1].  Never below base/2,
 * never above cap.
 */
int64_t
hs_backoff_usec(int attempt, int64_t base_usec, int64_t cap_usec, double jitter)
{
	int64_t		d = base_usec;

	if (attempt < 1)
		attempt = 1;
	if (!(jitter >= 0))
		jitter = 0;
	if (jitter > 1)
		jitter = 1;
	for (int i = 1; i < attempt && d < cap_usec; i++)
	{
		if (d > INT64_MAX / 2)
		{
			d = cap_usec;
			break;
		}
		d *= 2;
	}
	if (d > cap_usec)
		d = cap_usec;
	return d / 2 + (int64_t) llround(jitter * (double) (d - d / 2));
}
