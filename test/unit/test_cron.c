/*-------------------------------------------------------------------------
 *
 * test_cron.c
 *		Unit tests for the cron parser and next-fire calculator (src/common/cron.c).
 *
 * A plain C program with no framework: every check that fails prints one
 * line naming its source line, and the run ends with "N passed, N failed"
 * and a non-zero exit status if anything failed.  Build and run with
 * "make -C test/unit".
 *
 * IDENTIFICATION
 *		test/unit/test_cron.c
 *
 *-------------------------------------------------------------------------
 */
#include "cron.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit_check.h"

/* A set of values as a bit mask, from a list ending in -1. */
static uint64_t
bits(int first,...)
{
	va_list		ap;
	uint64_t	set = 0;
	int			v;

	va_start(ap, first);
	for (v = first; v >= 0; v = va_arg(ap, int))
		set |= UINT64_C(1) << v;
	va_end(ap);
	return set;
}

/* The values lo..hi as a bit mask. */
static uint64_t
range(int lo, int hi)
{
	uint64_t	set = 0;
	int			v;

	for (v = lo; v <= hi; v++)
		set |= UINT64_C(1) << v;
	return set;
}

#define ALL60	range(0, 59)
#define ALL24	range(0, 23)
#define ALLMD	range(1, 31)
#define ALLMO	range(1, 12)
#define ALLWD	range(0, 6)

/* Parse a spec that must be accepted. */
static CronSpec
parse_ok(int line, const char *spec)
{
	CronSpec	s;
	char		err[256];
	bool		ok = cron_parse(spec, &s, err, sizeof(err));

	check(line, ok, "cron_parse(\"%s\") failed: %s", spec, err);
	return s;
}

/* A spec must be rejected with a message containing want. */
static void
parse_fails(int line, const char *spec, const char *want)
{
	CronSpec	s;
	char		err[256];
	bool		ok;
	const char *c;
	bool		lower = true;

	memset(&s, 0x55, sizeof(s));
	ok = cron_parse(spec, &s, err, sizeof(err));
	check(line, !ok, "cron_parse(\"%s\") succeeded, wanted error \"%s\"", spec, want);
	if (ok)
		return;
	check(line, strstr(err, want) != NULL,
		  "cron_parse(\"%s\") said \"%s\", wanted it to contain \"%s\"", spec, err, want);
	/* messages are lower case, apart from quoted user text */
	for (c = err; *c && *c != '"'; c++)
	{
		if (*c >= 'A' && *c <= 'Z')
			lower = false;
	}
	check(line, lower && err[0] != '\0',
		  "message for \"%s\" is not lower case: \"%s\"", spec, err);
	check(line, s.seconds == 0 && s.minutes == 0 && s.hours == 0 &&
		  s.mdays == 0 && s.months == 0 && s.wdays == 0 &&
		  !s.mday_restricted && !s.wday_restricted && s.every_usec == 0,
		  "cron_parse(\"%s\") did not zero its output on failure", spec);
}

/* The whole message for a rejected spec must be exactly want. */
static void
parse_fails_exactly(int line, const char *spec, const char *want)
{
	CronSpec	s;
	char		err[256];
	bool		ok = cron_parse(spec, &s, err, sizeof(err));

	check(line, !ok && strcmp(err, want) == 0,
		  "cron_parse(\"%s\") said \"%s\", wanted \"%s\"", spec, ok ? "(success)" : err, want);
}

/* Compare every field of a parsed spec. */
static void
spec_is(int line, const char *spec, uint64_t sec, uint64_t min, uint64_t hour,
		uint64_t mday, uint64_t month, uint64_t wday, bool mday_r, bool wday_r)
{
	CronSpec	s = parse_ok(line, spec);

	check(line, s.seconds == sec, "\"%s\": seconds %llx, wanted %llx", spec,
		  (unsigned long long) s.seconds, (unsigned long long) sec);
	check(line, s.minutes == min, "\"%s\": minutes %llx, wanted %llx", spec,
		  (unsigned long long) s.minutes, (unsigned long long) min);
	check(line, s.hours == hour, "\"%s\": hours %lx, wanted %llx", spec,
		  (unsigned long) s.hours, (unsigned long long) hour);
	check(line, s.mdays == mday, "\"%s\": mdays %lx, wanted %llx", spec,
		  (unsigned long) s.mdays, (unsigned long long) mday);
	check(line, s.months == month, "\"%s\": months %x, wanted %llx", spec,
		  (unsigned) s.months, (unsigned long long) month);
	check(line, s.wdays == wday, "\"%s\": wdays %x, wanted %llx", spec,
		  (unsigned) s.wdays, (unsigned long long) wday);
	check(line, s.mday_restricted == mday_r && s.wday_restricted == wday_r,
		  "\"%s\": restricted %d/%d, wanted %d/%d", spec,
		  s.mday_restricted, s.wday_restricted, mday_r, wday_r);
	check(line, s.every_usec == 0, "\"%s\": every_usec %lld", spec,
		  (long long) s.every_usec);
}

static CronTime
tm(const char *text)
{
	CronTime	t;

	memset(&t, 0, sizeof(t));
	if (sscanf(text, "%d-%d-%d %d:%d:%d", &t.year, &t.month, &t.mday,
			   &t.hour, &t.minute, &t.second) != 6)
	{
		printf("bad time in test: %s\n", text);
		exit(2);
	}
	return t;
}

static const char *
fmt_time(char *buf, size_t len, const CronTime *t)
{
	snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d",
			 t->year, t->month, t->mday, t->hour, t->minute, t->second);
	return buf;
}

/* cron_next(spec, after) must give want, or fail if want is NULL. */
static void
next_is(int line, const char *spec, const char *after, const char *want)
{
	CronSpec	s = parse_ok(line, spec);
	CronTime	a = tm(after);
	CronTime	n;
	char		buf[64];
	bool		ok = cron_next(&s, &a, &n);

	if (want == NULL)
		check(line, !ok, "cron_next(\"%s\", %s) = %s, wanted none", spec, after,
			  fmt_time(buf, sizeof(buf), &n));
	else if (!ok)
		check(line, false, "cron_next(\"%s\", %s) found none, wanted %s", spec, after, want);
	else
		check(line, strcmp(fmt_time(buf, sizeof(buf), &n), want) == 0,
			  "cron_next(\"%s\", %s) = %s, wanted %s", spec, after, buf, want);
}

static void
every_is(int line, const char *spec, int64_t usec)
{
	CronSpec	s = parse_ok(line, spec);

	check(line, s.every_usec == usec, "\"%s\": every_usec %lld, wanted %lld",
		  spec, (long long) s.every_usec, (long long) usec);
	check(line, s.seconds == 0 && s.minutes == 0 && s.hours == 0 &&
		  s.mdays == 0 && s.months == 0 && s.wdays == 0,
		  "\"%s\": an @every spec has non-zero fields", spec);
}

/* ---------------------------------------------------------------------
 * Parsing
 * ---------------------------------------------------------------------
 */

static void
test_syntax(void)
{
	spec_is(__LINE__, "* * * * *", 1, ALL60, ALL24, ALLMD, ALLMO, ALLWD, false, false);
	spec_is(__LINE__, "5 * * * *", 1, bits(5, -1), ALL24, ALLMD, ALLMO, ALLWD, false, false);
	spec_is(__LINE__, "1-5 * * * *", 1, range(1, 5), ALL24, ALLMD, ALLMO, ALLWD, false, false);
	spec_is(__LINE__, "*/15 * * * *", 1, bits(0, 15, 30, 45, -1), ALL24, ALLMD, ALLMO, ALLWD, false, false);
	spec_is(__LINE__, "10-30/10 * * * *", 1, bits(10, 20, 30, -1), ALL24, ALLMD, ALLMO, ALLWD, false, false);
	spec_is(__LINE__, "5/20 * * * *", 1, bits(5, 25, 45, -1), ALL24, ALLMD, ALLMO, ALLWD, false, false);
	spec_is(__LINE__, "59/1 23/2 31/5 12/3 6/7", 1, bits(59, -1), bits(23, -1),
			bits(31, -1), bits(12, -1), bits(6, -1), true, true);
	spec_is(__LINE__, "1,2,10-12,*/30 0 * * *", 1, bits(0, 1, 2, 10, 11, 12, 30, -1),
			bits(0, -1), ALLMD, ALLMO, ALLWD, false, false);
	spec_is(__LINE__, "0 0 1,15 * *", 1, bits(0, -1), bits(0, -1), bits(1, 15, -1),
			ALLMO, ALLWD, true, false);
	spec_is(__LINE__, "59 23 31 12 6", 1, bits(59, -1), bits(23, -1), bits(31, -1),
			bits(12, -1), bits(6, -1), true, true);
	spec_is(__LINE__, "0 0 0 1 1 *", 1, bits(0, -1), bits(0, -1), bits(1, -1),
			bits(1, -1), ALLWD, true, false);

	/* six fields: seconds first */
	spec_is(__LINE__, "*/10 * * * * *", bits(0, 10, 20, 30, 40, 50, -1), ALL60, ALL24,
			ALLMD, ALLMO, ALLWD, false, false);
	spec_is(__LINE__, "30 5 4 3 2 1", bits(30, -1), bits(5, -1), bits(4, -1),
			bits(3, -1), bits(2, -1), bits(1, -1), true, true);

	/* '?' and the restricted flags */
	spec_is(__LINE__, "0 0 ? * MON", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(1, -1), false, true);
	spec_is(__LINE__, "0 0 1 * ?", 1, bits(0, -1), bits(0, -1), bits(1, -1), ALLMO,
			ALLWD, true, false);
	spec_is(__LINE__, "0 0 */1 * *", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			ALLWD, true, false);
	spec_is(__LINE__, "0 0 * * 0-7", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			ALLWD, false, true);
	spec_is(__LINE__, "0 0 ?,1 * *", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			ALLWD, true, false);

	/* whitespace */
	spec_is(__LINE__, "  \t0  0\t\t* *   *  \t", 1, bits(0, -1), bits(0, -1), ALLMD,
			ALLMO, ALLWD, false, false);

	/* a spec of exactly the maximum length is fine */
	{
		char		buf[CRON_MAX_SPEC_LEN + 1];

		memset(buf, ' ', CRON_MAX_SPEC_LEN);
		memcpy(buf, "0 0 * * *", 9);
		buf[CRON_MAX_SPEC_LEN] = '\0';
		parse_ok(__LINE__, buf);
	}
}

static void
test_names(void)
{
	spec_is(__LINE__, "0 0 1 jan,Mar-MAY,dEc *", 1, bits(0, -1), bits(0, -1), bits(1, -1),
			bits(1, 3, 4, 5, 12, -1), ALLWD, true, false);
	spec_is(__LINE__, "0 0 * JAN-DEC/3 *", 1, bits(0, -1), bits(0, -1), ALLMD,
			bits(1, 4, 7, 10, -1), ALLWD, false, false);
	spec_is(__LINE__, "0 9 * * MON-FRI", 1, bits(0, -1), bits(9, -1), ALLMD, ALLMO,
			range(1, 5), false, true);
	spec_is(__LINE__, "0 0 * * sun,Sat", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, 6, -1), false, true);
	spec_is(__LINE__, "0 0 * * tue/2", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(2, 4, 6, -1), false, true);
	/* 7 is Sunday, also at the end of a range; a range may end at SUN */
	spec_is(__LINE__, "0 0 * * 7", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, -1), false, true);
	spec_is(__LINE__, "0 0 * * 5-7", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, 5, 6, -1), false, true);
	spec_is(__LINE__, "0 0 * * fri-sun", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, 5, 6, -1), false, true);
	spec_is(__LINE__, "0 0 * * sun-tue", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, 1, 2, -1), false, true);
	spec_is(__LINE__, "0 0 * * sun-sun", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, -1), false, true);
	spec_is(__LINE__, "0 0 * * Sat-Sun", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, 6, -1), false, true);
	spec_is(__LINE__, "0 0 * * 0,7", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, -1), false, true);
	spec_is(__LINE__, "0 0 * * */2", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, 2, 4, 6, -1), false, true);
}

static void
test_macros(void)
{
	spec_is(__LINE__, "@yearly", 1, bits(0, -1), bits(0, -1), bits(1, -1), bits(1, -1),
			ALLWD, true, false);
	spec_is(__LINE__, "@annually", 1, bits(0, -1), bits(0, -1), bits(1, -1), bits(1, -1),
			ALLWD, true, false);
	spec_is(__LINE__, "@monthly", 1, bits(0, -1), bits(0, -1), bits(1, -1), ALLMO,
			ALLWD, true, false);
	spec_is(__LINE__, "@weekly", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			bits(0, -1), false, true);
	spec_is(__LINE__, "@daily", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			ALLWD, false, false);
	spec_is(__LINE__, "@midnight", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			ALLWD, false, false);
	spec_is(__LINE__, "@hourly", 1, bits(0, -1), ALL24, ALLMD, ALLMO,
			ALLWD, false, false);
	spec_is(__LINE__, " \t@Daily \t", 1, bits(0, -1), bits(0, -1), ALLMD, ALLMO,
			ALLWD, false, false);

	every_is(__LINE__, "@every 5 minutes", INT64_C(300000000));
	every_is(__LINE__, "@every 1 minute", INT64_C(60000000));
	every_is(__LINE__, "@every 90 m", INT64_C(5400000000));
	every_is(__LINE__, "@every 2min", INT64_C(120000000));
	every_is(__LINE__, "@every 10s", INT64_C(10000000));
	every_is(__LINE__, "@every 1 sec", INT64_C(1000000));
	every_is(__LINE__, "@every 30 seconds", INT64_C(30000000));
	every_is(__LINE__, "@every 1 second", INT64_C(1000000));
	every_is(__LINE__, "@every 500 ms", INT64_C(500000));
	every_is(__LINE__, "@every 1 milliseconds", INT64_C(1000));
	every_is(__LINE__, "@every 1h", INT64_C(3600000000));
	every_is(__LINE__, "@every 3 hours", INT64_C(10800000000));
	every_is(__LINE__, "@every 1 hour", INT64_C(3600000000));
	every_is(__LINE__, "@every 1 d", INT64_C(86400000000));
	every_is(__LINE__, "@every 2 days", INT64_C(172800000000));
	every_is(__LINE__, "  @EVERY\t7\tDAY  ", INT64_C(604800000000));
	/* the largest whole number of days that fits */
	every_is(__LINE__, "@every 106751991 days", INT64_C(106751991) * INT64_C(86400000000));
}

static void
test_errors(void)
{
	char		buf[CRON_MAX_SPEC_LEN + 2];
	CronSpec	s;
	char		err[256];
	char		small[8];

	/* empty */
	parse_fails_exactly(__LINE__, "", "cron spec is empty");
	parse_fails_exactly(__LINE__, " \t  ", "cron spec is empty");
	check(__LINE__, !cron_parse(NULL, &s, err, sizeof(err)) &&
		  strcmp(err, "cron spec is empty") == 0, "NULL spec: \"%s\"", err);

	/* field count */
	parse_fails_exactly(__LINE__, "* * *", "expected 5 or 6 fields, found 3");
	parse_fails_exactly(__LINE__, "*", "expected 5 or 6 fields, found 1");
	parse_fails_exactly(__LINE__, "* * * * * * *", "expected 5 or 6 fields, found 7");
	parse_fails(__LINE__, "1 2 3 4 5 6 7 8 9 10 11", "found 11");

	/* out of range, naming the field */
	parse_fails_exactly(__LINE__, "61 * * * *", "minute field \"61\" is out of range 0-59");
	parse_fails_exactly(__LINE__, "60 * * * * *", "second field \"60\" is out of range 0-59");
	parse_fails_exactly(__LINE__, "* 24 * * *", "hour field \"24\" is out of range 0-23");
	parse_fails_exactly(__LINE__, "* * 0 * *", "day-of-month field \"0\" is out of range 1-31");
	parse_fails(__LINE__, "* * 32 * *", "day-of-month field \"32\" is out of range 1-31");
	parse_fails_exactly(__LINE__, "* * * 13 *", "month field \"13\" is out of range 1-12");
	parse_fails(__LINE__, "* * * 0 *", "month field \"0\" is out of range 1-12");
	parse_fails_exactly(__LINE__, "* * * * 8", "day-of-week field \"8\" is out of range 0-7");
	parse_fails(__LINE__, "0-60 * * * *", "minute field \"60\" is out of range");
	parse_fails(__LINE__, "1,2,99 * * * *", "minute field \"99\" is out of range");

	/* reversed ranges */
	parse_fails_exactly(__LINE__, "30-10 * * * *",
						"minute field range \"30-10\" is reversed (the start must not be after the end)");
	parse_fails(__LINE__, "0 0 * * 1,5-2", "day-of-week field range \"5-2\" is reversed");
	parse_fails(__LINE__, "0 0 * dec-jan *", "month field range \"dec-jan\" is reversed");
	parse_fails(__LINE__, "0 0 * * 7-1", "day-of-week field range \"7-1\" is reversed");

	/* steps */
	parse_fails_exactly(__LINE__, "*/0 * * * *", "minute field step \"0\" is out of range 1-60");
	parse_fails(__LINE__, "0 1-5/0 * * *", "hour field step \"0\" is out of range 1-24");
	parse_fails(__LINE__, "*/61 * * * *", "minute field step \"61\" is out of range 1-60");
	parse_fails(__LINE__, "0 0 * * */8", "day-of-week field step \"8\" is out of range 1-7");
	parse_fails(__LINE__, "*/ * * * *", "minute field \"*/\" needs a number after \"/\"");
	parse_fails(__LINE__, "*/x * * * *", "needs a number after \"/\"");
	parse_fails(__LINE__, "*/5/5 * * * *", "unexpected character \"/\"");
	parse_fails(__LINE__, "0 0 ?/2 * *", "\"?\" cannot take a step");

	/* too many digits: no overflow */
	parse_fails_exactly(__LINE__, "99999999999999999999999 * * * *",
						"minute field number \"99999999999999999999999\" has too many digits");
	parse_fails(__LINE__, "0000000000001 * * * *", "has too many digits");
	parse_fails(__LINE__, "1-4294967296 * * * *", "has too many digits");
	parse_fails(__LINE__, "*/18446744073709551617 * * * *",
				"minute field step \"18446744073709551617\" has too many digits");
	parse_fails(__LINE__, "2147483648 * * * *", "has too many digits");
	parse_fails(__LINE__, "999999999 * * * *", "minute field \"999999999\" is out of range 0-59");

	/* junk characters and malformed lists */
	parse_fails_exactly(__LINE__, "5x * * * *",
						"minute field \"5x\" has unexpected character \"x\"");
	parse_fails(__LINE__, "* * * * mon!", "day-of-week field \"mon!\" has unexpected character \"!\"");
	parse_fails(__LINE__, "5,,6 * * * *", "minute field \"5,,6\" has an empty list element");
	parse_fails(__LINE__, "5, * * * *", "has an empty list element");
	parse_fails(__LINE__, ",5 * * * *", "has an empty list element");
	parse_fails(__LINE__, "-5 * * * *", "unexpected character \"-\"");
	parse_fails(__LINE__, "5- * * * *", "minute field \"5-\" ends where a value was expected");
	parse_fails(__LINE__, "1-2-3 * * * *", "unexpected character \"-\"");
	parse_fails(__LINE__, "** * * * *", "unexpected character \"*\"");
	parse_fails(__LINE__, "*-5 * * * *", "unexpected character \"-\"");
	parse_fails(__LINE__, "+5 * * * *", "unexpected character \"+\"");
	parse_fails(__LINE__, "5.0 * * * *", "unexpected character \".\"");
	parse_fails(__LINE__, "? * * * *", "\"?\" is only allowed in the day-of-month and day-of-week fields");
	parse_fails(__LINE__, "0 0 L * *", "day-of-month field \"L\" is not a number");
	parse_fails(__LINE__, "0 0 * * 5#3", "unexpected character \"#\"");
	parse_fails_exactly(__LINE__, "0 0\n * * *",
						"hour field \"0\\x0a\" has unexpected character \"\\x0a\"");
	parse_fails(__LINE__, "0 0\n* * *", "expected 5 or 6 fields, found 4");
	parse_fails(__LINE__, "5\x01 * * * *", "unexpected character \"\\x01\"");
	parse_fails(__LINE__, "5\xc3\xa9 * * * *", "unexpected character \"\\xc3\"");

	/* names */
	parse_fails(__LINE__, "jan * * * *", "minute field \"jan\" is not a number");
	parse_fails_exactly(__LINE__, "0 0 * JANUARY *",
						"month field \"JANUARY\" is not a valid name (use jan-dec or a number)");
	parse_fails(__LINE__, "0 0 * * funday", "day-of-week field \"funday\" is not a valid name (use sun-sat");
	parse_fails(__LINE__, "0 0 * * jan", "day-of-week field \"jan\" is not a valid name");
	parse_fails(__LINE__, "0 0 * mon *", "month field \"mon\" is not a valid name");

	/* macros and trailing garbage */
	parse_fails(__LINE__, "@daily foo", "unexpected text \"foo\" after @daily");
	parse_fails(__LINE__, "@hourly 0 * * * *", "unexpected text \"0 * * * *\" after @hourly");
	parse_fails(__LINE__, "@foo", "unknown macro \"@foo\"");
	parse_fails(__LINE__, "@", "unknown macro \"@\"");
	parse_fails(__LINE__, "@daily@hourly", "unknown macro");
	parse_fails(__LINE__, "@reboot", "@reboot is not supported");

	/* @every */
	parse_fails(__LINE__, "@every", "@every needs a whole number and a unit");
	parse_fails(__LINE__, "@every  ", "@every needs a whole number and a unit");
	parse_fails(__LINE__, "@every x s", "@every needs a whole number and a unit");
	parse_fails(__LINE__, "@every -1 s", "@every needs a whole number and a unit");
	parse_fails_exactly(__LINE__, "@every 0 s", "@every interval must be greater than 0");
	parse_fails(__LINE__, "@every 000 minutes", "@every interval must be greater than 0");
	parse_fails(__LINE__, "@every 5", "@every needs a unit after the number");
	parse_fails_exactly(__LINE__, "@every 2 fortnights",
						"@every unit \"fortnights\" is not known (use ms, s, m, h or d)");
	parse_fails(__LINE__, "@every 1.5 h", "@every unit \".5\" is not known");
	parse_fails(__LINE__, "@every 1h30m", "@every unit \"h30m\" is not known");
	parse_fails(__LINE__, "@every 5 m x", "unexpected text \"x\" after the @every interval");
	parse_fails(__LINE__, "@every 9999999999999999999 s", "@every interval \"9999999999999999999\" is too large");
	parse_fails(__LINE__, "@every 106751992 days", "@every interval \"106751992 days\" is too large");
	parse_fails(__LINE__, "@every 999999999999999999 ms", "is too large");
	parse_fails(__LINE__, "@every5m", "unknown macro \"@every5m\"");

	/* too long */
	memset(buf, ' ', sizeof(buf) - 1);
	memcpy(buf, "0 0 * * *", 9);
	buf[sizeof(buf) - 1] = '\0';
	parse_fails_exactly(__LINE__, buf, "cron spec is longer than 1000 bytes");

	/* a small error buffer is truncated, and no buffer at all is fine */
	check(__LINE__, !cron_parse("61 * * * *", &s, small, sizeof(small)) &&
		  strlen(small) == sizeof(small) - 1 && strncmp(small, "minute ", 7) == 0,
		  "truncated message \"%s\"", small);
	check(__LINE__, !cron_parse("61 * * * *", &s, NULL, 0), "NULL err buffer");
	check(__LINE__, !cron_parse("* * * * *", NULL, err, sizeof(err)), "NULL output");
	check(__LINE__, cron_parse("* * * * *", &s, NULL, 0), "success with no err buffer");

	/* the longest messages still fit in CRON_ERRLEN bytes */
	{
		char		big[CRON_ERRLEN];

		memset(buf, '\x01', 300);
		buf[300] = '\0';
		memcpy(buf, "@\x7f", 2);
		check(__LINE__, !cron_parse(buf, &s, big, sizeof(big)) &&
			  strlen(big) < sizeof(big) - 1, "long message \"%s\"", big);
		memcpy(buf, "@hourly ", 8);
		check(__LINE__, !cron_parse(buf, &s, big, sizeof(big)) &&
			  strlen(big) < sizeof(big) - 1, "long message \"%s\"", big);
	}

	/* long user text is cut short in the message */
	memset(buf, 'x', 200);
	strcpy(buf + 200, " * * * *");
	check(__LINE__, !cron_parse(buf, &s, err, sizeof(err)) &&
		  strstr(err, "xxx...\"") != NULL && strlen(err) < 120,
		  "long text quoted as \"%s\"", err);
}

/* ---------------------------------------------------------------------
 * Calendar and next-fire
 * ---------------------------------------------------------------------
 */

static void
test_weekday(void)
{
	int			y;
	int			m;
	int			d;
	int			wday = 6;		/* 1600-01-01 was a Saturday */
	bool		all_ok = true;

	check(__LINE__, cron_weekday(2024, 1, 1) == 1, "2024-01-01 is a Monday");
	check(__LINE__, cron_weekday(2024, 3, 1) == 5, "2024-03-01 is a Friday");
	check(__LINE__, cron_weekday(2000, 1, 1) == 6, "2000-01-01 is a Saturday");
	check(__LINE__, cron_weekday(1970, 1, 1) == 4, "1970-01-01 is a Thursday");
	check(__LINE__, cron_weekday(2100, 3, 1) == 1, "2100-03-01 is a Monday");
	check(__LINE__, cron_weekday(1, 1, 1) == 1, "0001-01-01 is a Monday");
	check(__LINE__, cron_weekday(9999, 12, 31) == 5, "9999-12-31 is a Friday");
	check(__LINE__, cron_weekday(2024, 2, 29) == 4, "2024-02-29 is a Thursday");
	check(__LINE__, cron_weekday(2023, 2, 29) == -1, "2023-02-29 is not a date");
	check(__LINE__, cron_weekday(2024, 13, 1) == -1, "month 13");
	check(__LINE__, cron_weekday(2024, 0, 1) == -1, "month 0");
	check(__LINE__, cron_weekday(2024, 4, 31) == -1, "April 31");
	check(__LINE__, cron_weekday(2024, 1, 0) == -1, "day 0");
	check(__LINE__, cron_weekday(-2147483647 - 1, 1, 1) >= 0 &&
		  cron_weekday(2147483647, 12, 31) >= 0, "extreme years");

	check(__LINE__, cron_days_in_month(2024, 2) == 29 && cron_days_in_month(2023, 2) == 28 &&
		  cron_days_in_month(2100, 2) == 28 && cron_days_in_month(2000, 2) == 29 &&
		  cron_days_in_month(2023, 4) == 30 && cron_days_in_month(2023, 12) == 31 &&
		  cron_days_in_month(2023, 13) == 0, "cron_days_in_month");

	/* walk every day from 1600 to 2400 */
	for (y = 1600; y <= 2400; y++)
	{
		for (m = 1; m <= 12; m++)
		{
			for (d = 1; d <= cron_days_in_month(y, m); d++)
			{
				if (cron_weekday(y, m, d) != wday && all_ok)
				{
					all_ok = false;
					check(__LINE__, false, "weekday of %04d-%02d-%02d is %d, wanted %d",
						  y, m, d, cron_weekday(y, m, d), wday);
				}
				wday = (wday + 1) % 7;
			}
		}
	}
	if (all_ok)
		check(__LINE__, true, "weekday walk");
}

static void
test_next(void)
{
	CronSpec	s;
	CronTime	a;
	CronTime	n;

	/* every second, including the last second of a year */
	next_is(__LINE__, "* * * * * *", "2024-06-15 10:20:30", "2024-06-15 10:20:31");
	next_is(__LINE__, "* * * * * *", "2023-12-31 23:59:59", "2024-01-01 00:00:00");
	next_is(__LINE__, "* * * * * *", "2024-02-28 23:59:59", "2024-02-29 00:00:00");
	next_is(__LINE__, "* * * * * *", "2023-02-28 23:59:59", "2023-03-01 00:00:00");
	next_is(__LINE__, "* * * * * *", "2100-02-28 23:59:59", "2100-03-01 00:00:00");
	next_is(__LINE__, "* * * * * *", "2000-02-28 23:59:59", "2000-02-29 00:00:00");
	next_is(__LINE__, "* * * * * *", "9999-12-31 23:59:59", "10000-01-01 00:00:00");
	next_is(__LINE__, "* * * * *", "2024-06-15 10:20:30", "2024-06-15 10:21:00");
	next_is(__LINE__, "* * * * *", "2024-06-15 10:20:00", "2024-06-15 10:21:00");

	/* every 15 minutes */
	next_is(__LINE__, "*/15 * * * *", "2024-06-15 10:07:30", "2024-06-15 10:15:00");
	next_is(__LINE__, "*/15 * * * *", "2024-06-15 10:15:00", "2024-06-15 10:30:00");
	next_is(__LINE__, "*/15 * * * *", "2024-06-15 10:45:00", "2024-06-15 11:00:00");
	next_is(__LINE__, "*/15 * * * *", "2024-12-31 23:50:00", "2025-01-01 00:00:00");
	next_is(__LINE__, "*/15 * * * *", "2024-06-15 10:44:59", "2024-06-15 10:45:00");

	/* Feb 29 */
	next_is(__LINE__, "0 0 29 2 *", "2023-03-01 00:00:00", "2024-02-29 00:00:00");
	next_is(__LINE__, "0 0 29 2 *", "2024-02-29 00:00:00", "2028-02-29 00:00:00");
	next_is(__LINE__, "0 0 29 2 *", "2025-01-01 00:00:00", "2028-02-29 00:00:00");
	next_is(__LINE__, "0 0 29 2 *", "2096-02-29 00:00:00", "2104-02-29 00:00:00");	/* within 8 years */
	next_is(__LINE__, "0 0 29 2 *", "2095-02-28 00:00:00", "2096-02-29 00:00:00");
	next_is(__LINE__, "0 0 29 2 *", "2099-01-01 00:00:00", "2104-02-29 00:00:00");
	next_is(__LINE__, "30 12 29 feb *", "2024-02-29 12:29:59", "2024-02-29 12:30:00");

	/* day 31 skips the shorter months */
	next_is(__LINE__, "0 0 31 * *", "2024-01-31 00:00:00", "2024-03-31 00:00:00");
	next_is(__LINE__, "0 0 31 * *", "2024-03-31 00:00:00", "2024-05-31 00:00:00");
	next_is(__LINE__, "0 0 31 * *", "2024-05-31 00:00:00", "2024-07-31 00:00:00");
	next_is(__LINE__, "0 0 31 * *", "2024-07-31 00:00:00", "2024-08-31 00:00:00");
	next_is(__LINE__, "0 0 31 * *", "2024-08-31 00:00:00", "2024-10-31 00:00:00");
	next_is(__LINE__, "0 0 31 * *", "2024-10-31 00:00:00", "2024-12-31 00:00:00");
	next_is(__LINE__, "0 0 31 * *", "2024-12-31 00:00:00", "2025-01-31 00:00:00");
	next_is(__LINE__, "0 0 30 * *", "2024-01-30 00:00:00", "2024-03-30 00:00:00");

	/* year boundaries */
	next_is(__LINE__, "0 0 1 1 *", "2024-12-31 23:59:59", "2025-01-01 00:00:00");
	next_is(__LINE__, "0 0 1 1 *", "2025-01-01 00:00:00", "2026-01-01 00:00:00");
	next_is(__LINE__, "59 59 23 31 12 *", "2024-12-31 23:59:59", "2025-12-31 23:59:59");
	next_is(__LINE__, "59 59 23 31 12 *", "2024-12-31 23:59:58", "2024-12-31 23:59:59");

	/* weekdays */
	next_is(__LINE__, "0 9 * * mon-fri", "2024-03-01 09:00:00", "2024-03-04 09:00:00");
	next_is(__LINE__, "0 9 * * mon-fri", "2024-03-01 08:59:59", "2024-03-01 09:00:00");
	next_is(__LINE__, "0 9 * * 1-5", "2024-03-02 12:00:00", "2024-03-04 09:00:00");
	next_is(__LINE__, "0 0 * * sun", "2024-03-01 00:00:00", "2024-03-03 00:00:00");
	next_is(__LINE__, "0 0 * * 7", "2024-03-01 00:00:00", "2024-03-03 00:00:00");
	next_is(__LINE__, "0 0 * * 0", "2024-03-03 00:00:00", "2024-03-10 00:00:00");
	next_is(__LINE__, "0 0 * * sat", "2024-12-29 00:00:00", "2025-01-04 00:00:00");
	next_is(__LINE__, "0 0 * 2 thu", "2024-02-29 00:00:00", "2025-02-06 00:00:00");

	/* DOM/DOW: either when both are restricted, else both */
	next_is(__LINE__, "0 0 13 * fri", "2024-01-01 00:00:00", "2024-01-05 00:00:00");
	next_is(__LINE__, "0 0 13 * fri", "2024-01-12 00:00:00", "2024-01-13 00:00:00");
	next_is(__LINE__, "0 0 13 * fri", "2024-01-13 00:00:00", "2024-01-19 00:00:00");
	next_is(__LINE__, "0 0 13 * *", "2024-01-01 00:00:00", "2024-01-13 00:00:00");
	next_is(__LINE__, "0 0 13 * ?", "2024-01-01 00:00:00", "2024-01-13 00:00:00");
	next_is(__LINE__, "0 0 * * fri", "2024-01-12 00:00:00", "2024-01-19 00:00:00");
	next_is(__LINE__, "0 0 ? * fri", "2024-01-12 00:00:00", "2024-01-19 00:00:00");
	next_is(__LINE__, "0 0 1 * mon", "2024-01-29 00:00:00", "2024-02-01 00:00:00");
	next_is(__LINE__, "0 0 31 2 mon", "2024-01-01 00:00:00", "2024-02-05 00:00:00");
	next_is(__LINE__, "0 0 */1 * 1", "2024-01-01 00:00:00", "2024-01-02 00:00:00");

	/* 6 fields versus 5 */
	next_is(__LINE__, "30 0 12 * * *", "2024-05-05 12:00:00", "2024-05-05 12:00:30");
	next_is(__LINE__, "30 0 12 * * *", "2024-05-05 12:00:30", "2024-05-06 12:00:30");
	next_is(__LINE__, "0 12 * * *", "2024-05-05 12:00:00", "2024-05-06 12:00:00");
	next_is(__LINE__, "0 12 * * *", "2024-05-05 11:59:59", "2024-05-05 12:00:00");
	next_is(__LINE__, "*/20 30 9-17/4 * * mon", "2024-05-06 13:30:40", "2024-05-06 17:30:00");
	next_is(__LINE__, "15,45 * * * * *", "2024-05-06 13:30:45", "2024-05-06 13:31:15");

	/* macros */
	next_is(__LINE__, "@hourly", "2024-05-06 10:00:00", "2024-05-06 11:00:00");
	next_is(__LINE__, "@hourly", "2024-05-06 23:59:59", "2024-05-07 00:00:00");
	next_is(__LINE__, "@daily", "2024-12-31 00:00:00", "2025-01-01 00:00:00");
	next_is(__LINE__, "@midnight", "2024-02-28 13:00:00", "2024-02-29 00:00:00");
	next_is(__LINE__, "@weekly", "2024-03-03 00:00:00", "2024-03-10 00:00:00");
	next_is(__LINE__, "@monthly", "2024-01-31 00:00:00", "2024-02-01 00:00:00");
	next_is(__LINE__, "@monthly", "2024-12-01 00:00:00", "2025-01-01 00:00:00");
	next_is(__LINE__, "@yearly", "2024-01-01 00:00:00", "2025-01-01 00:00:00");
	next_is(__LINE__, "@annually", "2023-12-31 23:59:59", "2024-01-01 00:00:00");

	/* impossible specs, and specs that only look it */
	next_is(__LINE__, "0 0 30 2 *", "2024-01-01 00:00:00", NULL);
	next_is(__LINE__, "0 0 31 4,6,9,11 *", "2024-01-01 00:00:00", NULL);
	next_is(__LINE__, "0 0 30,31 feb ?", "2024-01-01 00:00:00", NULL);
	next_is(__LINE__, "0 0 30 2 mon", "2024-01-01 00:00:00", "2024-02-05 00:00:00");
	next_is(__LINE__, "0 0 31 2,4 1", "2024-01-01 00:00:00", "2024-02-05 00:00:00");

	/* @every has no calendar: the caller adds the interval */
	s = parse_ok(__LINE__, "@every 5 minutes");
	a = tm("2024-01-01 00:00:00");
	check(__LINE__, !cron_next(&s, &a, &n), "cron_next on @every");

	/* invalid starting times */
	s = parse_ok(__LINE__, "* * * * * *");
	a = tm("2024-13-01 00:00:00");
	check(__LINE__, !cron_next(&s, &a, &n), "month 13");
	a = tm("2023-02-29 00:00:00");
	check(__LINE__, !cron_next(&s, &a, &n), "Feb 29 2023");
	a = tm("2024-01-01 00:00:60");
	check(__LINE__, !cron_next(&s, &a, &n), "second 60");
	a = tm("2024-01-01 24:00:00");
	check(__LINE__, !cron_next(&s, &a, &n), "hour 24");
	a = tm("0-01-01 00:00:00");
	check(__LINE__, !cron_next(&s, &a, &n), "year 0");
	a = tm("10000-01-01 00:00:00");
	check(__LINE__, !cron_next(&s, &a, &n), "year 10000");
	a = tm("2024-01-01 00:00:00");
	check(__LINE__, !cron_next(NULL, &a, &n) && !cron_next(&s, NULL, &n) &&
		  !cron_next(&s, &a, NULL), "NULL arguments");

	/* a hand-made spec with an empty set never fires */
	s = parse_ok(__LINE__, "* * * * *");
	s.hours = 0;
	check(__LINE__, !cron_next(&s, &a, &n), "empty hour set");
}

/* ---------------------------------------------------------------------
 * Brute force: step minute by minute and compare
 * ---------------------------------------------------------------------
 */

static bool
matches(const CronSpec *s, const CronTime *t)
{
	int			wday = cron_weekday(t->year, t->month, t->mday);
	bool		dom = (s->mdays >> t->mday) & 1;
	bool		dow = (s->wdays >> wday) & 1;
	bool		day = (s->mday_restricted && s->wday_restricted) ? (dom || dow) : (dom && dow);

	return ((s->seconds >> t->second) & 1) && ((s->minutes >> t->minute) & 1) &&
		((s->hours >> t->hour) & 1) && ((s->months >> t->month) & 1) && day;
}

static void
step_minute(CronTime *t)
{
	t->second = 0;
	if (++t->minute < 60)
		return;
	t->minute = 0;
	if (++t->hour < 24)
		return;
	t->hour = 0;
	if (++t->mday <= cron_days_in_month(t->year, t->month))
		return;
	t->mday = 1;
	if (++t->month <= 12)
		return;
	t->month = 1;
	t->year++;
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

static void
test_brute_force(void)
{
	static const char *const specs[] = {
		"*/7 3-5 * * *", "0 0 * * 1,3", "13 * 1,15 * 2", "0 12 31 * *",
		"5-10/2 22 * 1,2,12 sat", "0 0 29 2 *", "1 1 */9 * *",
		"0 */5 * * 0", "59 23 * * *", "0 0 L * *"
	};
	static const char *const starts[] = {
		"2023-12-30 21:59:30", "2024-02-27 04:00:00", "2024-02-29 23:59:00",
		"2025-06-30 03:06:59"
	};
	int			i;
	int			j;

	for (i = 0; i < (int) (sizeof(specs) / sizeof(specs[0])); i++)
	{
		CronSpec	s;
		char		err[256];

		if (!cron_parse(specs[i], &s, err, sizeof(err)))
			continue;			/* "L" is not supported: skip */
		for (j = 0; j < (int) (sizeof(starts) / sizeof(starts[0])); j++)
		{
			CronTime	a = tm(starts[j]);
			CronTime	n;
			CronTime	t = a;
			bool		found;
			int			k;
			char		b1[64];
			char		b2[64];

			found = cron_next(&s, &a, &n);
			/* search up to 60 days ahead */
			step_minute(&t);
			for (k = 0; k < 60 * 24 * 60 && !matches(&s, &t); k++)
				step_minute(&t);
			if (k == 60 * 24 * 60)
				check(__LINE__, !found || time_cmp(&n, &t) > 0,
					  "\"%s\" from %s: brute force found nothing in 60 days, cron_next %s",
					  specs[i], starts[j], fmt_time(b1, sizeof(b1), &n));
			else
				check(__LINE__, found && time_cmp(&t, &n) == 0,
					  "\"%s\" from %s: cron_next %s, brute force %s", specs[i],
					  starts[j], found ? fmt_time(b1, sizeof(b1), &n) : "none",
					  fmt_time(b2, sizeof(b2), &t));
		}
	}
}

int
main(void)
{
	test_syntax();
	test_names();
	test_macros();
	test_errors();
	test_weekday();
	test_next();
	test_brute_force();

	return unit_summary();
}
