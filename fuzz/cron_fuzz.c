/*-------------------------------------------------------------------------
 *
 * cron_fuzz.c
 *		libFuzzer target for the cron parser and next-fire calculator
 *		(src/common/cron.c).
 *
 * Each input is taken as a spec (NUL-terminated copy, at most MAX_INPUT
 * bytes, so specs over the 1000-byte limit are tried too).  cron_parse must
 * either fail with a sensible message and a zeroed output, or give a spec
 * whose sets are non-empty and in range.  For a calendar spec, cron_next is
 * then run from a few fixed times and one derived from the input, and its
 * answer is checked against invariants (strictly later, every field in
 * range, the time matches the spec) and against a slow, independent
 * search that walks day by day with its own weekday formula.  Any mismatch
 * aborts, which libFuzzer records as a crash.
 *
 * Build and run with "make -C fuzz run" (see fuzz/Makefile).
 *
 * IDENTIFICATION
 *		fuzz/cron_fuzz.c
 *
 *-------------------------------------------------------------------------
 */
#include "cron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest input tried: a little over the parser's own limit. */
#define MAX_INPUT	(CRON_MAX_SPEC_LEN + 100)

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fail(const char *spec, const char *what, const CronTime *after)
{
	fprintf(stderr, "cron_fuzz: %s\n  spec: \"%s\"\n", what, spec);
	if (after != NULL)
		fprintf(stderr, "  after: %04d-%02d-%02d %02d:%02d:%02d\n",
				after->year, after->month, after->mday,
				after->hour, after->minute, after->second);
	abort();
}

/* ---------------------------------------------------------------------
 * An independent calendar
 * ---------------------------------------------------------------------
 */

static bool
leap(int y)
{
	return y % 400 == 0 || (y % 4 == 0 && y % 100 != 0);
}

static int
month_days(int y, int m)
{
	if (m == 2)
		return leap(y) ? 29 : 28;
	if (m == 4 || m == 6 || m == 9 || m == 11)
		return 30;
	return 31;
}

/* Zeller's congruence, converted to 0 = Sunday; for years >= 1. */
static int
weekday(int y, int m, int d)
{
	int			k;
	int			j;
	int			h;

	if (m < 3)
	{
		m += 12;
		y--;
	}
	k = y % 100;
	j = y / 100;
	h = (d + (13 * (m + 1)) / 5 + k + k / 4 + j / 4 + 5 * j) % 7;	/* 0 = Saturday */
	return (h + 6) % 7;
}

static bool
in_set(uint64_t set, int v)
{
	return v >= 0 && v < 64 && ((set >> v) & 1) != 0;
}

/* Does the spec allow this date? */
static bool
day_ok(const CronSpec *s, int y, int m, int d)
{
	bool		dom = in_set(s->mdays, d);
	bool		dow = in_set(s->wdays, weekday(y, m, d));

	if (!in_set(s->months, m))
		return false;
	if (s->mday_restricted && s->wday_restricted)
		return dom || dow;
	return dom && dow;
}

/* Does the spec match this time? */
static bool
matches(const CronSpec *s, const CronTime *t)
{
	return day_ok(s, t->year, t->month, t->mday) &&
		in_set(s->hours, t->hour) &&
		in_set(s->minutes, t->minute) &&
		in_set(s->seconds, t->second);
}

/*
 * The first time of day at or after h:m:sec (sec may be 60, meaning the
 * next minute) that the spec's hour, minute and second sets allow.
 */
static bool
first_tod(const CronSpec *s, int h, int m, int sec, CronTime *out)
{
	for (; h < 24; h++, m = 0, sec = 0)
	{
		if (!in_set(s->hours, h))
			continue;
		for (; m < 60; m++, sec = 0)
		{
			if (!in_set(s->minutes, m))
				continue;
			for (; sec < 60; sec++)
			{
				if (in_set(s->seconds, sec))
				{
					out->hour = h;
					out->minute = m;
					out->second = sec;
					return true;
				}
			}
		}
	}
	return false;
}

/* The slow answer to cron_next: day by day up to the search horizon. */
static bool
slow_next(const CronSpec *s, const CronTime *after, CronTime *next)
{
	int			y = after->year;
	int			m = after->month;
	int			d = after->mday;

	*next = *after;
	if (day_ok(s, y, m, d) &&
		first_tod(s, after->hour, after->minute, after->second + 1, next))
		return true;

	for (;;)
	{
		if (++d > month_days(y, m))
		{
			d = 1;
			if (++m > 12)
			{
				m = 1;
				y++;
			}
		}
		if (y > after->year + CRON_SEARCH_YEARS)
			return false;
		if (day_ok(s, y, m, d))
		{
			next->year = y;
			next->month = m;
			next->mday = d;
			return first_tod(s, 0, 0, 0, next);
		}
	}
}

static int
time_cmp(const CronTime *a, const CronTime *b)
{
	const int	av[6] = {a->year, a->month, a->mday, a->hour, a->minute, a->second};
	const int	bv[6] = {b->year, b->month, b->mday, b->hour, b->minute, b->second};
	int			i;

	for (i = 0; i < 6; i++)
	{
		if (av[i] != bv[i])
			return av[i] < bv[i] ? -1 : 1;
	}
	return 0;
}

/* ---------------------------------------------------------------------
 * The checks
 * ---------------------------------------------------------------------
 */

static bool
spec_is_zero(const CronSpec *s)
{
	return s->seconds == 0 && s->minutes == 0 && s->hours == 0 &&
		s->mdays == 0 && s->months == 0 && s->wdays == 0 &&
		!s->mday_restricted && !s->wday_restricted && s->every_usec == 0;
}

static bool
spec_equal(const CronSpec *a, const CronSpec *b)
{
	return a->seconds == b->seconds && a->minutes == b->minutes &&
		a->hours == b->hours && a->mdays == b->mdays &&
		a->months == b->months && a->wdays == b->wdays &&
		a->mday_restricted == b->mday_restricted &&
		a->wday_restricted == b->wday_restricted &&
		a->every_usec == b->every_usec;
}

static void
check_parsed(const char *spec, const CronSpec *s)
{
	const uint64_t sixty = (UINT64_C(1) << 60) - 1;

	if (s->every_usec != 0)
	{
		CronSpec	zero = *s;

		zero.every_usec = 0;
		if (s->every_usec < 1000 || s->every_usec % 1000 != 0)
			fail(spec, "@every interval is not a positive whole number of ms", NULL);
		if (!spec_is_zero(&zero))
			fail(spec, "@every spec has calendar fields set", NULL);
		return;
	}
	if (s->seconds == 0 || (s->seconds & ~sixty) != 0)
		fail(spec, "seconds set empty or out of range", NULL);
	if (s->minutes == 0 || (s->minutes & ~sixty) != 0)
		fail(spec, "minutes set empty or out of range", NULL);
	if (s->hours == 0 || (s->hours >> 24) != 0)
		fail(spec, "hours set empty or out of range", NULL);
	if ((s->mdays & ~(uint32_t) 1) == 0 || (s->mdays & 1) != 0)
		fail(spec, "day-of-month set empty or out of range", NULL);
	if ((s->months & 0x1ffe) == 0 || (s->months & ~0x1ffe) != 0)
		fail(spec, "month set empty or out of range", NULL);
	if (s->wdays == 0 || (s->wdays & 0x80) != 0)
		fail(spec, "day-of-week set empty or out of range", NULL);
	if (!s->mday_restricted && s->mdays != UINT32_C(0xfffffffe))
		fail(spec, "unrestricted day-of-month field is not every day", NULL);
	if (!s->wday_restricted && s->wdays != 0x7f)
		fail(spec, "unrestricted day-of-week field is not every day", NULL);
}

static void
check_error(const char *spec, const CronSpec *s, const char *err, size_t errlen)
{
	size_t		len = strlen(err);

	if (len == 0)
		fail(spec, "parse failed without a message", NULL);
	if (len >= errlen - 1)
		fail(spec, "message does not fit in CRON_ERRLEN bytes", NULL);
	if (err[0] >= 'A' && err[0] <= 'Z')
		fail(spec, "message does not start in lower case", NULL);
	if (!spec_is_zero(s))
		fail(spec, "output not zeroed after a failed parse", NULL);
}

static void
check_next(const char *spec, const CronSpec *s, const CronTime *after)
{
	CronTime	got;
	CronTime	want;
	bool		got_ok = cron_next(s, after, &got);
	bool		want_ok = slow_next(s, after, &want);

	if (got_ok)
	{
		if (time_cmp(&got, after) <= 0)
			fail(spec, "cron_next is not after the given time", after);
		if (got.month < 1 || got.month > 12 || got.mday < 1 ||
			got.mday > month_days(got.year, got.month) ||
			got.hour < 0 || got.hour > 23 || got.minute < 0 || got.minute > 59 ||
			got.second < 0 || got.second > 59)
			fail(spec, "cron_next gave a field out of range", after);
		if (got.year > after->year + CRON_SEARCH_YEARS)
			fail(spec, "cron_next went past the search horizon", after);
		if (!matches(s, &got))
			fail(spec, "cron_next gave a time the spec does not match", after);
		if (cron_weekday(got.year, got.month, got.mday) !=
			weekday(got.year, got.month, got.mday))
			fail(spec, "cron_weekday disagrees with Zeller", after);
	}
	if (got_ok != want_ok)
		fail(spec, got_ok ? "cron_next found a time the slow search did not"
			 : "cron_next found nothing but the slow search did", after);
	if (got_ok && time_cmp(&got, &want) != 0)
	{
		fprintf(stderr, "  got %04d-%02d-%02d %02d:%02d:%02d, want %04d-%02d-%02d %02d:%02d:%02d\n",
				got.year, got.month, got.mday, got.hour, got.minute, got.second,
				want.year, want.month, want.mday, want.hour, want.minute, want.second);
		fail(spec, "cron_next is not the earliest match", after);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const CronTime fixed[] = {
		{2024, 2, 28, 23, 59, 59},
		{2023, 12, 31, 23, 59, 59},
		{2100, 2, 28, 12, 0, 0},
		{1999, 12, 31, 23, 59, 59},
		{2024, 7, 15, 10, 30, 30},
	};
	char		spec[MAX_INPUT + 1];
	char		err[CRON_ERRLEN];
	char		small[9];
	CronSpec	s;
	CronSpec	s2;
	bool		ok;
	uint32_t	h = 2166136261u;
	CronTime	t;
	size_t		i;

	if (size > MAX_INPUT)
		size = MAX_INPUT;
	memcpy(spec, data, size);
	spec[size] = '\0';

	memset(&s, 0xa5, sizeof(s));
	ok = cron_parse(spec, &s, err, sizeof(err));

	/* the same answer with a tiny message buffer, and with none */
	memset(&s2, 0x5a, sizeof(s2));
	if (cron_parse(spec, &s2, small, sizeof(small)) != ok || !spec_equal(&s, &s2))
		fail(spec, "parse differs with a small message buffer", NULL);
	if (cron_parse(spec, &s2, NULL, 0) != ok)
		fail(spec, "parse differs without a message buffer", NULL);

	if (!ok)
	{
		check_error(spec, &s, err, sizeof(err));
		if (strncmp(err, small, sizeof(small) - 1) != 0)
			fail(spec, "truncated message differs", NULL);
		return 0;
	}
	check_parsed(spec, &s);
	if (s.every_usec != 0)
	{
		if (cron_next(&s, &fixed[0], &t))
			fail(spec, "cron_next accepted an @every spec", NULL);
		return 0;
	}

	for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		check_next(spec, &s, &fixed[i]);

	/* one more starting time, derived from the input (FNV-1a) */
	for (i = 0; i < size; i++)
		h = (h ^ (uint8_t) data[i]) * 16777619u;
	t.year = 1990 + (int) (h % 130);
	t.month = 1 + (int) ((h >> 8) % 12);
	t.mday = 1 + (int) ((h >> 12) % (uint32_t) month_days(t.year, t.month));
	t.hour = (int) ((h >> 17) % 24);
	t.minute = (int) ((h >> 22) % 60);
	t.second = (int) ((h >> 26) % 60);
	check_next(spec, &s, &t);

	return 0;
}
