/*-------------------------------------------------------------------------
 *
 * cron.c
 *		Cron spec parser (cron_parse) and next-fire-time calculator
 *		(cron_next), plus the calendar helpers they need.
 *
 * This file owns the cron syntax described in cron.h: what is accepted,
 * what is rejected and the wording of every parse error.  It is plain C99
 * without PostgreSQL headers, allocations, global state or output, so that
 * the unit tests (test/unit) and the fuzzer (fuzz/) can build it alone.
 * Nothing here reads a number without bounding its digits first, so no
 * input can overflow an integer.
 *
 * cron_next walks the calendar from the coarsest unit down: a month that
 * can't match is skipped whole, then days within the month, then hours,
 * minutes and seconds, each jumping straight to the next value in its set.
 * A call therefore costs at most a few thousand cheap steps, even for a
 * spec that never fires.
 *
 * IDENTIFICATION
 *		src/common/cron.c
 *
 *-------------------------------------------------------------------------
 */
#include "cron.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define CRON_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CRON_PRINTF(f, a)
#endif

/* Longest digit run accepted in a field (any more is surely a mistake). */
#define FIELD_MAX_DIGITS	9

/* Longest digit run accepted by @every; 10^18 - 1 still fits in int64_t. */
#define EVERY_MAX_DIGITS	18

/* Bytes of user text quoted in an error message before it is cut short. */
#define QUOTE_MAX			40
#define QUOTE_BUFSZ			(QUOTE_MAX * 4 + 8)

/* The six fields in the order they appear in a 6-field spec. */
enum
{
	FIELD_SECOND,
	FIELD_MINUTE,
	FIELD_HOUR,
	FIELD_MDAY,
	FIELD_MONTH,
	FIELD_WDAY,
	NUM_FIELDS
};

/* What one field accepts. */
typedef struct CronField
{
	const char *name;			/* for error messages */
	int			min;			/* smallest value; also where '*' starts */
	int			max;			/* where '*' and "a/s" end */
	int			max_value;		/* largest value written explicitly */
	const char *const *names;	/* 3-letter names, or NULL */
	int			name_base;		/* value of names[0] */
	int			nnames;
	bool		is_day;			/* '?' is allowed */
} CronField;

static const char *const month_names[12] = {
	"jan", "feb", "mar", "apr", "may", "jun",
	"jul", "aug", "sep", "oct", "nov", "dec"
};

static const char *const wday_names[7] = {
	"sun", "mon", "tue", "wed", "thu", "fri", "sat"
};

static const CronField cron_fields[NUM_FIELDS] = {
	{"second", 0, 59, 59, NULL, 0, 0, false},
	{"minute", 0, 59, 59, NULL, 0, 0, false},
	{"hour", 0, 23, 23, NULL, 0, 0, false},
	{"day-of-month", 1, 31, 31, NULL, 0, 0, true},
	{"month", 1, 12, 12, month_names, 1, 12, false},
	/* 7 is also Sunday; it is folded into bit 0 after parsing */
	{"day-of-week", 0, 6, 7, wday_names, 0, 7, true},
};

/* Units of "@every <n> <unit>". */
typedef struct EveryUnit
{
	const char *name;
	int64_t		usec;
} EveryUnit;

static const EveryUnit every_units[] = {
	{"ms", 1000}, {"msec", 1000}, {"msecs", 1000},
	{"millisecond", 1000}, {"milliseconds", 1000},
	{"s", 1000000}, {"sec", 1000000}, {"secs", 1000000},
	{"second", 1000000}, {"seconds", 1000000},
	{"m", 60000000}, {"min", 60000000}, {"mins", 60000000},
	{"minute", 60000000}, {"minutes", 60000000},
	{"h", INT64_C(3600000000)}, {"hr", INT64_C(3600000000)},
	{"hrs", INT64_C(3600000000)}, {"hour", INT64_C(3600000000)},
	{"hours", INT64_C(3600000000)},
	{"d", INT64_C(86400000000)}, {"day", INT64_C(86400000000)},
	{"days", INT64_C(86400000000)},
};

#define NUM_EVERY_UNITS	((int) (sizeof(every_units) / sizeof(every_units[0])))

/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

static bool
is_space(char c)
{
	return c == ' ' || c == '\t';
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char
to_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c;
}

/* Does s[0..len) equal the lower-case word w, ignoring case? */
static bool
word_equals(const char *s, size_t len, const char *w)
{
	size_t		i;

	if (strlen(w) != len)
		return false;
	for (i = 0; i < len; i++)
	{
		if (to_lower(s[i]) != w[i])
			return false;
	}
	return true;
}

/*
 * Copy user text s[0..len) into buf for quoting in a message: printable
 * ASCII as is, '"' and '\' escaped, any other byte as \xNN, and cut to
 * QUOTE_MAX bytes with "..." after.  buf must hold QUOTE_BUFSZ bytes.
 */
static const char *
quote(char *buf, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t		i;
	size_t		o = 0;

	for (i = 0; i < len && i < QUOTE_MAX; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
		{
			buf[o++] = '\\';
			buf[o++] = (char) c;
		}
		else if (c >= 0x20 && c < 0x7f)
			buf[o++] = (char) c;
		else
		{
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 0xf];
		}
	}
	if (i < len)
	{
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

/* Write a message into err (if there is room for any) and return false. */
static bool cron_error(char *err, size_t errlen, const char *fmt,...) CRON_PRINTF(3, 4);

static bool
cron_error(char *err, size_t errlen, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL || errlen == 0)
		return false;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

/* ---------------------------------------------------------------------
 * Parsing
 * ---------------------------------------------------------------------
 */

/*
 * Read a run of digits at p[*pos] (the caller has checked there is at least
 * one) into *value, advancing *pos.  More than maxdigits digits is an error,
 * reported by the caller from the returned false; *pos then points past the
 * whole run either way.
 */
static bool
read_number(const char *p, size_t len, size_t *pos, int maxdigits, int64_t *value)
{
	size_t		start = *pos;
	int64_t		v = 0;

	while (*pos < len && is_digit(p[*pos]))
		(*pos)++;
	if (*pos - start > (size_t) maxdigits)
		return false;
	for (; start < *pos; start++)
		v = v * 10 + (p[start] - '0');
	*value = v;
	return true;
}

/*
 * Parse one value (a number or, where the field has them, a 3-letter name)
 * at p[*pos] of a field's text p[0..len), range-check it and store it in
 * *value.  If is_name isn't NULL, it tells whether the value was a name.
 */
static bool
parse_value(const CronField *f, const char *p, size_t len, size_t *pos,
			int *value, bool *is_name, char *err, size_t errlen)
{
	char		q[QUOTE_BUFSZ];
	char		q2[QUOTE_BUFSZ];
	size_t		start = *pos;

	if (*pos < len && is_digit(p[*pos]))
	{
		int64_t		v;

		if (!read_number(p, len, pos, FIELD_MAX_DIGITS, &v))
			return cron_error(err, errlen,
							  "%s field number \"%s\" has too many digits",
							  f->name, quote(q, p + start, *pos - start));
		if (v < f->min || v > f->max_value)
			return cron_error(err, errlen,
							  "%s field \"%s\" is out of range %d-%d",
							  f->name, quote(q, p + start, *pos - start),
							  f->min, f->max_value);
		*value = (int) v;
		if (is_name != NULL)
			*is_name = false;
		return true;
	}

	if (*pos < len && is_alpha(p[*pos]))
	{
		int			i;

		while (*pos < len && is_alpha(p[*pos]))
			(*pos)++;
		if (f->names == NULL)
			return cron_error(err, errlen,
							  "%s field \"%s\" is not a number",
							  f->name, quote(q, p + start, *pos - start));
		for (i = 0; i < f->nnames; i++)
		{
			if (word_equals(p + start, *pos - start, f->names[i]))
			{
				*value = f->name_base + i;
				if (is_name != NULL)
					*is_name = true;
				return true;
			}
		}
		return cron_error(err, errlen,
						  "%s field \"%s\" is not a valid name (use %s-%s or a number)",
						  f->name, quote(q, p + start, *pos - start),
						  f->names[0], f->names[f->nnames - 1]);
	}

	if (*pos >= len)
		return cron_error(err, errlen,
						  "%s field \"%s\" ends where a value was expected",
						  f->name, quote(q, p, len));
	return cron_error(err, errlen,
					  "%s field \"%s\" has unexpected character \"%s\"",
					  f->name, quote(q, p, len), quote(q2, p + *pos, 1));
}

/*
 * Parse the text p[0..len) of field f into a bit set.  *restricted is set
 * unless the field is exactly "*" (or "?" in a day field).
 */
static bool
parse_field(const CronField *f, const char *p, size_t len, uint64_t *bits,
			bool *restricted, char *err, size_t errlen)
{
	char		q[QUOTE_BUFSZ];
	char		q2[QUOTE_BUFSZ];
	size_t		pos = 0;
	uint64_t	set = 0;

	*restricted = !(len == 1 && (p[0] == '*' || (f->is_day && p[0] == '?')));

	for (;;)
	{
		int			lo;
		int			hi;
		int			step = 1;
		bool		single = false;
		bool		hi_is_name = false;
		size_t		item_start = pos;
		int			v;

		if (pos >= len || p[pos] == ',')
			return cron_error(err, errlen,
							  "%s field \"%s\" has an empty list element",
							  f->name, quote(q, p, len));

		if (p[pos] == '*' || p[pos] == '?')
		{
			if (p[pos] == '?' && !f->is_day)
				return cron_error(err, errlen,
								  "%s field \"%s\": \"?\" is only allowed in the day-of-month and day-of-week fields",
								  f->name, quote(q, p, len));
			if (p[pos] == '?' && pos + 1 < len && p[pos + 1] == '/')
				return cron_error(err, errlen,
								  "%s field \"%s\": \"?\" cannot take a step",
								  f->name, quote(q, p, len));
			lo = f->min;
			hi = f->max;
			pos++;
		}
		else
		{
			if (!parse_value(f, p, len, &pos, &lo, NULL, err, errlen))
				return false;
			hi = lo;
			single = true;
			if (pos < len && p[pos] == '-')
			{
				pos++;
				if (!parse_value(f, p, len, &pos, &hi, &hi_is_name, err, errlen))
					return false;
				/* "fri-sun": a range may end at SUN, meaning 7 */
				if (hi_is_name && f->max_value > f->max && hi == f->min && lo > hi)
					hi = f->max_value;
				if (lo > hi)
					return cron_error(err, errlen,
									  "%s field range \"%s\" is reversed (the start must not be after the end)",
									  f->name, quote(q, p + item_start, pos - item_start));
				single = false;
			}
		}

		if (pos < len && p[pos] == '/')
		{
			size_t		step_start = ++pos;
			int64_t		s;
			int			range_size = f->max - f->min + 1;

			if (pos >= len || !is_digit(p[pos]))
				return cron_error(err, errlen,
								  "%s field \"%s\" needs a number after \"/\"",
								  f->name, quote(q, p, len));
			if (!read_number(p, len, &pos, FIELD_MAX_DIGITS, &s))
				return cron_error(err, errlen,
								  "%s field step \"%s\" has too many digits",
								  f->name, quote(q, p + step_start, pos - step_start));
			if (s < 1 || s > range_size)
				return cron_error(err, errlen,
								  "%s field step \"%s\" is out of range 1-%d",
								  f->name, quote(q, p + step_start, pos - step_start),
								  range_size);
			step = (int) s;
			/* "a/s" runs from a to the end of the field */
			if (single && lo < f->max)
				hi = f->max;
		}

		/* lo, hi <= 59 and step <= 60: no overflow */
		for (v = lo; v <= hi; v += step)
			set |= UINT64_C(1) << v;

		if (pos >= len)
			break;
		if (p[pos] != ',')
			return cron_error(err, errlen,
							  "%s field \"%s\" has unexpected character \"%s\"",
							  f->name, quote(q, p, len), quote(q2, p + pos, 1));
		pos++;
	}

	*bits = set;
	return true;
}

/* Parse "@every <n> <unit>"; p points just after "@every". */
static bool
parse_every(const char *p, CronSpec *out, char *err, size_t errlen)
{
	char		q[QUOTE_BUFSZ];
	size_t		len = strlen(p);
	size_t		pos = 0;
	size_t		num_start;
	size_t		unit_start;
	int64_t		n;
	int			i;

	while (pos < len && is_space(p[pos]))
		pos++;
	if (pos >= len || !is_digit(p[pos]))
		return cron_error(err, errlen,
						  "@every needs a whole number and a unit, e.g. \"@every 5 minutes\"");
	num_start = pos;
	if (!read_number(p, len, &pos, EVERY_MAX_DIGITS, &n))
		return cron_error(err, errlen,
						  "@every interval \"%s\" is too large",
						  quote(q, p + num_start, pos - num_start));
	if (n == 0)
		return cron_error(err, errlen, "@every interval must be greater than 0");

	while (pos < len && is_space(p[pos]))
		pos++;
	unit_start = pos;
	while (pos < len && !is_space(p[pos]))
		pos++;
	if (pos == unit_start)
		return cron_error(err, errlen,
						  "@every needs a unit after the number (ms, s, m, h or d)");

	for (i = 0; i < NUM_EVERY_UNITS; i++)
	{
		if (word_equals(p + unit_start, pos - unit_start, every_units[i].name))
			break;
	}
	if (i == NUM_EVERY_UNITS)
		return cron_error(err, errlen,
						  "@every unit \"%s\" is not known (use ms, s, m, h or d)",
						  quote(q, p + unit_start, pos - unit_start));
	if (n > INT64_MAX / every_units[i].usec)
		return cron_error(err, errlen,
						  "@every interval \"%s\" is too large",
						  quote(q, p + num_start, pos - num_start));

	while (pos < len && is_space(p[pos]))
		pos++;
	if (pos < len)
		return cron_error(err, errlen,
						  "unexpected text \"%s\" after the @every interval",
						  quote(q, p + pos, len - pos));

	out->every_usec = n * every_units[i].usec;
	return true;
}

/* Set *out to the spec that a 5-field cron line would give. */
static void
set_simple(CronSpec *out, uint64_t minutes, uint32_t hours, uint32_t mdays,
		   uint16_t months, uint8_t wdays, bool mday_restricted,
		   bool wday_restricted)
{
	out->seconds = 1;
	out->minutes = minutes;
	out->hours = hours;
	out->mdays = mdays;
	out->months = months;
	out->wdays = wdays;
	out->mday_restricted = mday_restricted;
	out->wday_restricted = wday_restricted;
}

#define ALL_SIXTY		((UINT64_C(1) << 60) - 1)	/* seconds or minutes */
#define ALL_HOURS		((UINT32_C(1) << 24) - 1)
#define ALL_MDAYS		(((UINT32_C(1) << 31) - 1) << 1)
#define ALL_MONTHS		((uint16_t) (((1U << 12) - 1) << 1))
#define ALL_WDAYS		((uint8_t) ((1U << 7) - 1))

/* Parse a macro: the spec's first word w[0..wlen) begins with '@'. */
static bool
parse_macro(const char *w, size_t wlen, CronSpec *out, char *err, size_t errlen)
{
	char		q[QUOTE_BUFSZ];
	const char *rest = w + wlen;

	if (word_equals(w, wlen, "@every"))
		return parse_every(rest, out, err, errlen);

	while (is_space(*rest))
		rest++;

	if (word_equals(w, wlen, "@yearly") || word_equals(w, wlen, "@annually"))
		set_simple(out, 1, 1, 1 << 1, 1 << 1, ALL_WDAYS, true, false);
	else if (word_equals(w, wlen, "@monthly"))
		set_simple(out, 1, 1, 1 << 1, ALL_MONTHS, ALL_WDAYS, true, false);
	else if (word_equals(w, wlen, "@weekly"))
		set_simple(out, 1, 1, ALL_MDAYS, ALL_MONTHS, 1, false, true);
	else if (word_equals(w, wlen, "@daily") || word_equals(w, wlen, "@midnight"))
		set_simple(out, 1, 1, ALL_MDAYS, ALL_MONTHS, ALL_WDAYS, false, false);
	else if (word_equals(w, wlen, "@hourly"))
		set_simple(out, 1, ALL_HOURS, ALL_MDAYS, ALL_MONTHS, ALL_WDAYS, false, false);
	else if (word_equals(w, wlen, "@reboot"))
		return cron_error(err, errlen,
						  "@reboot is not supported; use a time-based schedule");
	else
		return cron_error(err, errlen,
						  "unknown macro \"%s\" (use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every)",
						  quote(q, w, wlen));

	if (*rest != '\0')
	{
		char		q2[QUOTE_BUFSZ];

		memset(out, 0, sizeof(*out));
		return cron_error(err, errlen,
						  "unexpected text \"%s\" after %s",
						  quote(q, rest, strlen(rest)), quote(q2, w, wlen));
	}
	return true;
}

bool
cron_parse(const char *spec, CronSpec *out, char *err, size_t errlen)
{
	const char *start[NUM_FIELDS];
	size_t		flen[NUM_FIELDS];
	int			nfields = 0;
	size_t		len;
	size_t		pos;
	int			first;
	int			i;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (out == NULL)
		return cron_error(err, errlen, "no place to store the parsed cron spec");
	memset(out, 0, sizeof(*out));
	if (spec == NULL)
		return cron_error(err, errlen, "cron spec is empty");

	/* measure, but never read past CRON_MAX_SPEC_LEN + 1 bytes */
	for (len = 0; len <= CRON_MAX_SPEC_LEN && spec[len] != '\0'; len++)
		;
	if (len > CRON_MAX_SPEC_LEN)
		return cron_error(err, errlen,
						  "cron spec is longer than %d bytes", CRON_MAX_SPEC_LEN);

	/* split into whitespace-separated words, remembering the first six */
	pos = 0;
	for (;;)
	{
		size_t		wstart;

		while (pos < len && is_space(spec[pos]))
			pos++;
		if (pos >= len)
			break;
		wstart = pos;
		while (pos < len && !is_space(spec[pos]))
			pos++;
		if (nfields < NUM_FIELDS)
		{
			start[nfields] = spec + wstart;
			flen[nfields] = pos - wstart;
		}
		nfields++;
	}

	if (nfields == 0)
		return cron_error(err, errlen, "cron spec is empty");

	if (start[0][0] == '@')
	{
		if (!parse_macro(start[0], flen[0], out, err, errlen))
		{
			memset(out, 0, sizeof(*out));
			return false;
		}
		return true;
	}

	if (nfields != 5 && nfields != 6)
		return cron_error(err, errlen,
						  "expected 5 or 6 fields, found %d", nfields);

	/* a 5-field spec starts at the minute field and fires at second 0 */
	first = (nfields == 5) ? FIELD_MINUTE : FIELD_SECOND;
	out->seconds = 1;

	for (i = 0; i < nfields; i++)
	{
		const CronField *f = &cron_fields[first + i];
		uint64_t	bits = 0;
		bool		restricted = false;

		if (!parse_field(f, start[i], flen[i], &bits, &restricted, err, errlen))
		{
			memset(out, 0, sizeof(*out));
			return false;
		}
		switch (first + i)
		{
			case FIELD_SECOND:
				out->seconds = bits;
				break;
			case FIELD_MINUTE:
				out->minutes = bits;
				break;
			case FIELD_HOUR:
				out->hours = (uint32_t) bits;
				break;
			case FIELD_MDAY:
				out->mdays = (uint32_t) bits;
				out->mday_restricted = restricted;
				break;
			case FIELD_MONTH:
				out->months = (uint16_t) bits;
				break;
			case FIELD_WDAY:
				/* 7 is Sunday too */
				if (bits & (UINT64_C(1) << 7))
					bits |= 1;
				out->wdays = (uint8_t) (bits & ALL_WDAYS);
				out->wday_restricted = restricted;
				break;
		}
	}
	return true;
}

/* ---------------------------------------------------------------------
 * Calendar arithmetic
 * ---------------------------------------------------------------------
 */

static bool
is_leap_year(int year)
{
	return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

int
cron_days_in_month(int year, int month)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (month < 1 || month > 12)
		return 0;
	if (month == 2 && is_leap_year(year))
		return 29;
	return days[month - 1];
}

int
cron_weekday(int year, int month, int mday)
{
	/* offsets of each month's first day, counting March as the year start */
	static const int offset[12] = {0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4};
	int			y;

	if (month < 1 || month > 12 || mday < 1 ||
		mday > cron_days_in_month(year, month))
		return -1;

	/*
	 * The Gregorian calendar repeats every 400 years, which is a whole
	 * number of weeks, so reduce the year first: that keeps the arithmetic
	 * small and non-negative for any int.  January and February count as
	 * months of the year before.
	 */
	y = year % 400;
	if (month < 3)
		y--;
	if (y < 0)
		y += 400;
	return (y + y / 4 - y / 100 + y / 400 + offset[month - 1] + mday) % 7;
}

/* The first value v in from..max whose bit is set in bits, or -1. */
static int
next_in_set(uint64_t bits, int from, int max)
{
	int			v;

	for (v = from; v <= max; v++)
	{
		if (bits & (UINT64_C(1) << v))
			return v;
	}
	return -1;
}

/* Does a day with this day of month and weekday match the spec? */
static bool
day_matches(const CronSpec *spec, int mday, int wday)
{
	bool		dom = (spec->mdays >> mday) & 1;
	bool		dow = (spec->wdays >> wday) & 1;

	if (spec->mday_restricted && spec->wday_restricted)
		return dom || dow;
	return dom && dow;
}

/*
 * Can the spec ever match a day?  Only a restricted day of month whose days
 * none of the chosen months has (e.g. "0 0 30 2 *") cannot: every month
 * has all seven weekdays.
 */
static bool
some_day_possible(const CronSpec *spec)
{
	int			month;

	if (spec->mday_restricted && spec->wday_restricted)
		return true;
	for (month = 1; month <= 12; month++)
	{
		/* 2000 is a leap year, so February counts with its 29th */
		int			dim = cron_days_in_month(2000, month);
		int			mday;

		if (!(spec->months & (1U << month)))
			continue;
		for (mday = 1; mday <= dim; mday++)
		{
			int			wday;

			for (wday = 0; wday < 7; wday++)
			{
				if (day_matches(spec, mday, wday))
					return true;
			}
		}
	}
	return false;
}

static bool
valid_time(const CronTime *t)
{
	return t->year >= CRON_MIN_YEAR && t->year <= CRON_MAX_YEAR &&
		t->month >= 1 && t->month <= 12 &&
		t->mday >= 1 && t->mday <= cron_days_in_month(t->year, t->month) &&
		t->hour >= 0 && t->hour <= 23 &&
		t->minute >= 0 && t->minute <= 59 &&
		t->second >= 0 && t->second <= 59;
}

/* Move t to the start of the next month. */
static void
next_month(CronTime *t)
{
	t->mday = 1;
	t->hour = t->minute = t->second = 0;
	if (++t->month > 12)
	{
		t->month = 1;
		t->year++;
	}
}

/* Move t to the start of the next day. */
static void
next_day(CronTime *t)
{
	t->hour = t->minute = t->second = 0;
	if (++t->mday > cron_days_in_month(t->year, t->month))
		next_month(t);
}

/* Move t to the start of the next hour. */
static void
next_hour(CronTime *t)
{
	t->minute = t->second = 0;
	if (++t->hour > 23)
		next_day(t);
}

/* Move t to the start of the next minute. */
static void
next_minute(CronTime *t)
{
	t->second = 0;
	if (++t->minute > 59)
		next_hour(t);
}

bool
cron_next(const CronSpec *spec, const CronTime *after, CronTime *next)
{
	uint64_t	seconds;
	uint64_t	minutes;
	uint32_t	hours;
	uint16_t	months;
	CronTime	t;
	int			last_year;

	if (spec == NULL || after == NULL || next == NULL)
		return false;
	if (spec->every_usec != 0 || !valid_time(after))
		return false;

	/* ignore any bits outside the fields' ranges */
	seconds = spec->seconds & ALL_SIXTY;
	minutes = spec->minutes & ALL_SIXTY;
	hours = spec->hours & ALL_HOURS;
	months = spec->months & ALL_MONTHS;
	if (seconds == 0 || minutes == 0 || hours == 0 || months == 0 ||
		!some_day_possible(spec))
		return false;

	/* start one second after the given time */
	t = *after;
	if (++t.second > 59)
		next_minute(&t);
	last_year = after->year + CRON_SEARCH_YEARS;

	for (;;)
	{
		int			dim;
		int			wday;
		int			v;

		if (t.year > last_year)
			return false;

		if (!(months & (1U << t.month)))
		{
			next_month(&t);
			continue;
		}

		/* find a matching day in this month, from t.mday on */
		dim = cron_days_in_month(t.year, t.month);
		wday = cron_weekday(t.year, t.month, t.mday);
		v = t.mday;
		while (v <= dim && !day_matches(spec, v, wday))
		{
			v++;
			wday = (wday + 1) % 7;
		}
		if (v > dim)
		{
			next_month(&t);
			continue;
		}
		if (v != t.mday)
		{
			t.mday = v;
			t.hour = t.minute = t.second = 0;
		}

		v = next_in_set(hours, t.hour, 23);
		if (v < 0)
		{
			next_day(&t);
			continue;
		}
		if (v != t.hour)
		{
			t.hour = v;
			t.minute = t.second = 0;
		}

		v = next_in_set(minutes, t.minute, 59);
		if (v < 0)
		{
			next_hour(&t);
			continue;
		}
		if (v != t.minute)
		{
			t.minute = v;
			t.second = 0;
		}

		v = next_in_set(seconds, t.second, 59);
		if (v < 0)
		{
			next_minute(&t);
			continue;
		}
		t.second = v;

		*next = t;
		return true;
	}
}
