/*-------------------------------------------------------------------------
 *
 * test_json.c
 *		Unit tests for hasched-worker's JSON helpers (hasched-worker/json.c):
 *		the syntax check of a command's output, and the reading of the
 *		contract's members from a message body (hw_json_member,
 *		hw_json_string_value).
 *
 * A plain C program, as test_cron.c, with its checks (unit_check.h).
 *
 * IDENTIFICATION
 *		test/unit/test_json.c
 *
 *-------------------------------------------------------------------------
 */
#include "hw.h"

#include <stdio.h>
#include <string.h>

#include "unit_check.h"

static bool
valid(const char *s)
{
	return hw_json_valid(s, strlen(s));
}

/* member key of s as text (the raw value), or NULL */
static const char *
member(const char *s, const char *key)
{
	static char buf[256];
	const char *v;
	size_t		n;

	if (!hw_json_member(s, strlen(s), key, &v, &n) || n >= sizeof(buf))
		return NULL;
	memcpy(buf, v, n);
	buf[n] = '\0';
	return buf;
}

/* the string value of member key, unescaped into out (size bytes); false if none */
static bool
string_member(const char *s, const char *key, char *out, size_t size)
{
	const char *v;
	size_t		n;

	return hw_json_member(s, strlen(s), key, &v, &n) &&
		hw_json_string_value(v, n, out, size);
}

int
main(void)
{
	const char *body = "{\"job_id\": 42, \"attempt\": 2, \"lease_token\": \"1:2:3\","
		" \"queue\": \"q\", \"tenant\": \"r\\\"\\u00e9\\ud83d\\ude00\", \"priority\": 7,"
		" \"payload\": {\"job_id\": 99, \"x\": [1, \"}\"]}}";
	char		out[64];
	const char *m;

	/* the syntax check */
	CHECK(valid("{}") && valid(" [1, 2.5e3, -0, true, null, \"a\\u0041\"] "));
	CHECK(!valid("{") && !valid("[1,]") && !valid("01") && !valid("\"\\x\""));
	CHECK(!valid("\"\\u0000\""));	/* jsonb refuses it */
	CHECK(!valid("\"\\u00\"") && !valid("\"\\u00g1\""));
	CHECK(!valid("1 2") && !valid(""));

	/* members at the top level only, the first of a key */
	CHECK((m = member(body, "job_id")) != NULL && strcmp(m, "42") == 0);
	CHECK((m = member(body, "priority")) != NULL && strcmp(m, "7") == 0);
	CHECK((m = member(body, "lease_token")) != NULL && strcmp(m, "\"1:2:3\"") == 0);
	CHECK((m = member(body, "payload")) != NULL && strncmp(m, "{\"job_id\": 99", 13) == 0);
	CHECK(member(body, "x") == NULL);	/* inside payload only */
	CHECK(member(body, "job") == NULL);
	CHECK(member("[1, 2]", "job_id") == NULL);
	CHECK(member("{\"job_id\": }", "job_id") == NULL);
	CHECK(member("{\"a\": 1, \"job_id\": 5", "job_id") != NULL);	/* read up to it */
	CHECK(member("{}", "job_id") == NULL);

	/* string values unescaped to UTF-8: \" , U+00E9, a surrogate pair (U+1F600) */
	CHECK(string_member(body, "tenant", out, sizeof(out)) &&
		  strcmp(out, "r\"\xc3\xa9\xf0\x9f\x98\x80") == 0);
	CHECK(string_member(body, "lease_token", out, sizeof(out)) && strcmp(out, "1:2:3") == 0);
	CHECK(!string_member(body, "job_id", out, sizeof(out)));	/* not a string */
	CHECK(!string_member(body, "tenant", out, 4));	/* does not fit */
	CHECK(string_member("{\"t\": \"\\n\\t\\/\\\\\"}", "t", out, sizeof(out)) &&
		  strcmp(out, "\n\t/\\") == 0);
	CHECK(string_member("{\"t\": \"\\ud800x\"}", "t", out, sizeof(out)) &&
		  strcmp(out, "\xef\xbf\xbdx") == 0);	/* a lone surrogate: U+FFFD */

	return unit_summary();
}
