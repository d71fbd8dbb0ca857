/*-------------------------------------------------------------------------
 *
 * unit_check.h
 *		The checks of the plain-C unit tests (test_cron.c, test_json.c):
 *		check() counts one and prints a line naming the file and line of a
 *		failed one; unit_summary() prints "N passed, N failed" and gives
 *		the exit status.  Each test program includes it once.
 *
 * IDENTIFICATION
 *		test/unit/unit_check.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef UNIT_CHECK_H
#define UNIT_CHECK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#if defined(__GNUC__) || defined(__clang__)
#define TEST_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TEST_PRINTF(f, a)
#endif

static int	n_passed;
static int	n_failed;

static void check_at(const char *file, int line, bool ok, const char *fmt,...) TEST_PRINTF(4, 5);

/* check(__LINE__, ok, fmt, ...): count one check; describe it if it failed */
#define check(line, ...) check_at(__FILE__, (line), __VA_ARGS__)
/* CHECK(expr): the expression itself describes the check */
#define CHECK(ok) check_at(__FILE__, __LINE__, (ok), "%s", #ok)

static void
check_at(const char *file, int line, bool ok, const char *fmt,...)
{
	va_list		ap;

	if (ok)
	{
		n_passed++;
		return;
	}
	n_failed++;
	printf("FAIL %s:%d: ", file, line);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* the last line of a run, and its exit status (1 if a check failed) */
static int
unit_summary(void)
{
	printf("%d passed, %d failed\n", n_passed, n_failed);
	return n_failed == 0 ? 0 : 1;
}

#endif							/* UNIT_CHECK_H */
