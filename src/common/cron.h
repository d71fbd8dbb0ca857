/*-------------------------------------------------------------------------
 *
 * cron.h
 *		Cron schedule specs: parsing and next-fire-time calculation.
 *
 * This header and cron.c are plain C99: no PostgreSQL headers, no memory
 * allocation, no global state and no output, so the same code is compiled
 * into the extension, into the unit tests (test/unit) and into the libFuzzer
 * target (fuzz/).
 *
 * Accepted syntax (fields are separated by spaces and/or tabs):
 *
 *		minute hour day-of-month month day-of-week				(second = 0)
 *		second minute hour day-of-month month day-of-week
 *
 * Each field is a comma-separated list of items; an item is "*", a number
 * "n" or a range "a-b", optionally followed by a step "/s": "*" or "a-b"
 * then take every s-th value, and "a/s" means a, a+s, ... up to the
 * field's maximum.  "?" is the same as "*" in the two day fields.  Months
 * may be named JAN-DEC and days SUN-SAT (any case); in the day-of-week
 * field both 0 and 7 mean Sunday, and a range may end at SUN ("fri-sun").
 * Ranges do not wrap around: "22-2" is an error.  As in classic cron, when
 * both day fields are restricted (neither is exactly "*" nor "?") a day
 * matches if either of them matches; otherwise both must.
 *
 * Macros: @yearly (@annually), @monthly, @weekly, @daily (@midnight) and
 * @hourly, all firing at second 0, and "@every <n> <unit>" with unit one of
 * ms, s, m, h, d (or their longer spellings), a fixed interval that
 * cron_next does not handle: the caller adds every_usec itself.
 *
 * IDENTIFICATION
 *		src/common/cron.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HASCHED_CRON_H
#define HASCHED_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest spec cron_parse accepts, in bytes (not counting the NUL). */
#define CRON_MAX_SPEC_LEN	1000

/* An error buffer of this size holds any cron_parse message whole. */
#define CRON_ERRLEN			512

/*
 * cron_next looks no further than the end of the year this many years after
 * the given time.
 */
#define CRON_SEARCH_YEARS	8

/* Years cron_next accepts as its starting point. */
#define CRON_MIN_YEAR		1
#define CRON_MAX_YEAR		9999

/* A parsed spec.  Every set a successful cron_parse returns is non-empty. */
typedef struct CronSpec
{
	uint64_t	seconds;		/* bit s set: second s (0..59) matches */
	uint64_t	minutes;		/* 0..59 */
	uint32_t	hours;			/* 0..23 */
	uint32_t	mdays;			/* bits 1..31 */
	uint16_t	months;			/* bits 1..12 */
	uint8_t		wdays;			/* bits 0..6, Sunday = 0 */
	bool		mday_restricted;	/* day-of-month field was not '*' (or '?') */
	bool		wday_restricted;	/* day-of-week field was not '*' (or '?') */
	int64_t		every_usec;		/* > 0 for "@every <n> <unit>": a fixed
								 * interval; the fields above are then
								 * unused (zero) */
} CronSpec;

/* A local wall-clock time; month 1..12, mday 1..31. */
typedef struct CronTime
{
	int			year,
				month,
				mday,
				hour,
				minute,
				second;
} CronTime;

/*
 * Parse spec into *out.  On failure return false and write a lower-case,
 * NUL-terminated message into err (truncated to errlen bytes, of which
 * CRON_ERRLEN are always enough; err may be NULL when errlen is 0), e.g.
 * "minute field \"61\" is out of range 0-59".
 * *out is zeroed first, also on failure.
 */
extern bool cron_parse(const char *spec, CronSpec *out, char *err, size_t errlen);

/*
 * Set *next to the first wall-clock time strictly after *after that the
 * spec matches.  Return false if there is none by the end of the year
 * CRON_SEARCH_YEARS after after->year (e.g. "0 0 30 2 *"), for an @every
 * spec, or if *after is not a valid time (year outside CRON_MIN_YEAR ..
 * CRON_MAX_YEAR, or any field out of range; there are no leap seconds).
 * Pure proleptic Gregorian calendar arithmetic, without time zones.
 */
extern bool cron_next(const CronSpec *spec, const CronTime *after, CronTime *next);

/* Day of the week of a date, 0 = Sunday; -1 if the date is not valid. */
extern int	cron_weekday(int year, int month, int mday);

/* Days in a month (28..31); 0 if month is not 1..12. */
extern int	cron_days_in_month(int year, int month);

#endif							/* HASCHED_CRON_H */
