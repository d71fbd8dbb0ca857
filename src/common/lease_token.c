/*-------------------------------------------------------------------------
 *
 * lease_token.c
 *		Lease tokens: "epoch:attempt:lease_id", formatted and parsed.
 *
 * Plain C (no backend state): also linked by hasched-worker, the unit
 * tests and the fuzzers.
 *
 * IDENTIFICATION
 *		src/common/lease_token.c
 *
 *-------------------------------------------------------------------------
 */
#include "hs_common.h"

#include <ctype.h>
#include <stdio.h>

void
hs_token_format(char *buf, size_t bufsz, int32_t epoch, int32_t attempt,
				int64_t lease_id)
{
	snprintf(buf, bufsz, "%d:%d:%lld", (int) epoch, (int) attempt,
			 (long long) lease_id);
}

bool
hs_token_parse(const char *token, int32_t *epoch, int32_t *attempt,
			   int64_t *lease_id)
{
	long long	e,
				a,
				l;
	int			consumed = 0;

	if (sscanf(token, "%lld:%lld:%lld%n", &e, &a, &l, &consumed) != 3 ||
		token[consumed] != '\0' || !isdigit((unsigned char) token[0]) ||
		e < 0 || e > INT32_MAX || a < 0 || a > INT32_MAX || l < 0)
		return false;
	*epoch = (int32_t) e;
	*attempt = (int32_t) a;
	*lease_id = (int64_t) l;
	return true;
}
