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
#include <stdint.h>
#include <stdio.h>

void
hs_token_format(char *buf, size_t bufsz, int32_t epoch, int32_t attempt,
				int64_t lease_id)
{
	snprintf(buf, bufsz, "%d:%d:%lld", (int) epoch, (int) attempt,
			 (long long) lease_id);
}

/*
 * Parse one number of a token: decimal digits only (no sign, no blank),
 * at most max.  Returns the text after it, or NULL.
 */
static const char *
parse_part(const char *p, int64_t max, int64_t *value)
{
	int64_t		v = 0;

	if (!isdigit((unsigned char) *p))
		return NULL;
	for (; isdigit((unsigned char) *p); p++)
	{
		int			d = *p - '0';

		if (v > (max - d) / 10)
			return NULL;
		v = v * 10 + d;
	}
	*value = v;
	return p;
}

/*
 * The exact form hs_token_format writes: three decimal numbers separated
 * by colons, nothing else (no blanks, signs or leading '+').
 */
bool
hs_token_parse(const char *token, int32_t *epoch, int32_t *attempt,
			   int64_t *lease_id)
{
	int64_t		e,
				a,
				l;
	const char *p = token;

	if ((p = parse_part(p, INT32_MAX, &e)) == NULL || *p++ != ':' ||
		(p = parse_part(p, INT32_MAX, &a)) == NULL || *p++ != ':' ||
		(p = parse_part(p, INT64_MAX, &l)) == NULL || *p != '\0')
		return false;
	*epoch = (int32_t) e;
	*attempt = (int32_t) a;
	*lease_id = l;
	return true;
}
