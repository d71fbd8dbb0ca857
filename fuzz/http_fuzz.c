/*-------------------------------------------------------------------------
 *
 * http_fuzz.c
 *		libFuzzer target for the health listener's request parser
 *		(src/common/http_request.c).
 *
 * Each input is what a client might send on one connection.  It is parsed
 * as the listener does: whole, and also as it arrives in two pieces (the
 * first byte of the input chooses where it is cut), with max the
 * listener's 4096 bytes and, from the second byte, a smaller max.
 * Checked, any failure aborting (a crash for libFuzzer):
 *
 *	- nothing is read past len or past max (AddressSanitizer: the input is
 *	  copied to a buffer of exactly len bytes);
 *	- the answer is one of the four, and a request found (HTTP_OK) is
 *	  sane: its length within what was looked at and ending in CRLF CRLF,
 *	  its method GET, HEAD or other, its path starting with '/' and free of
 *	  '?', blanks and control bytes, its minor version a digit, and a
 *	  request that is not GET or HEAD never kept alive;
 *	- prefixes agree with the whole: a prefix shorter than a request found
 *	  is HTTP_INCOMPLETE; a prefix of a request refused as malformed is
 *	  refused or incomplete, never accepted; the same bytes parse the same
 *	  way twice (no hidden state);
 *	- after a request found, the rest (pipelined requests) parses too.
 *
 * Build and run with "make -C fuzz run-http" (see fuzz/Makefile).
 *
 * IDENTIFICATION
 *		fuzz/http_fuzz.c
 *
 *-------------------------------------------------------------------------
 */
#include "http_request.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LISTENER_MAX	4096

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fail(const char *what, const char *buf, size_t len)
{
	fprintf(stderr, "http_fuzz: %s (input of %zu bytes: \"", what, len);
	for (size_t i = 0; i < len && i < 200; i++)
		fprintf(stderr, (buf[i] >= 0x20 && buf[i] < 0x7f) ? "%c" : "\\x%02x",
				(unsigned char) buf[i]);
	fprintf(stderr, "%s\")\n", len > 200 ? "..." : "");
	abort();
}

static void
check_request(const HttpRequest *r, const char *buf, size_t len, size_t max)
{
	size_t		looked = len < max ? len : max;
	size_t		plen = strnlen(r->path, HTTP_PATH_MAX);

	if (r->length < 16 || r->length > looked)
		fail("request length out of range", buf, len);
	if (memcmp(buf + r->length - 4, "\r\n\r\n", 4) != 0)
		fail("request does not end with CRLF CRLF", buf, len);
	if (r->method != HTTP_GET && r->method != HTTP_HEAD && r->method != HTTP_OTHER)
		fail("bad method", buf, len);
	if (plen == 0 || plen >= HTTP_PATH_MAX || r->path[0] != '/')
		fail("bad path", buf, len);
	for (size_t i = 0; i < plen; i++)
		if ((unsigned char) r->path[i] <= 0x20 || (unsigned char) r->path[i] >= 0x7f ||
			r->path[i] == '?')
			fail("path with a blank, a control byte or '?'", buf, len);
	if (r->minor < 0 || r->minor > 9)
		fail("bad minor version", buf, len);
	if (r->method == HTTP_OTHER && r->keep_alive)
		fail("a method not served is kept alive", buf, len);
}

static HttpParse
parse_checked(const char *buf, size_t len, size_t max, HttpRequest *r)
{
	HttpParse	p = http_parse_request(buf, len, max, r);
	HttpRequest again;

	if (p != HTTP_INCOMPLETE && p != HTTP_OK && p != HTTP_BAD && p != HTTP_TOO_LARGE)
		fail("unknown answer", buf, len);
	if (p == HTTP_OK)
		check_request(r, buf, len, max);
	if (http_parse_request(buf, len, max, &again) != p ||
		(p == HTTP_OK && memcmp(&again, r, sizeof(again)) != 0))
		fail("the same bytes parse differently", buf, len);
	if (p == HTTP_INCOMPLETE && len >= max)
		fail("incomplete although max bytes are there", buf, len);
	return p;
}

static void
check_prefixes(const char *buf, size_t len, size_t max, size_t cut)
{
	HttpRequest whole;
	HttpRequest part;
	HttpParse	pw = parse_checked(buf, len, max, &whole);
	HttpParse	pp;
	char	   *copy;

	if (cut > len)
		cut = len;
	/* the first piece alone, in a buffer of exactly its size */
	copy = malloc(cut ? cut : 1);
	memcpy(copy, buf, cut);
	pp = parse_checked(copy, cut, max, &part);
	if (pw == HTTP_OK && cut < whole.length && pp != HTTP_INCOMPLETE)
		fail("a prefix of a request is not incomplete", buf, len);
	if (pw == HTTP_OK && cut >= whole.length &&
		(pp != HTTP_OK || part.length != whole.length))
		fail("a prefix holding the whole request parses differently", buf, len);
	if (pw == HTTP_BAD && pp == HTTP_OK)
		fail("a prefix of a malformed request is accepted", buf, len);
	free(copy);

	/* pipelined: what follows a request */
	if (pw == HTTP_OK && whole.length < len)
	{
		HttpRequest next;

		(void) parse_checked(buf + whole.length, len - whole.length, max, &next);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *buf;
	size_t		cut;
	size_t		small_max;

	if (size < 2)
		return 0;
	cut = data[0] * (size - 2) / 255;
	small_max = 16 + data[1];
	size -= 2;
	buf = malloc(size ? size : 1);
	memcpy(buf, data + 2, size);
	check_prefixes(buf, size, LISTENER_MAX, cut);
	check_prefixes(buf, size, small_max, cut);
	free(buf);
	return 0;
}
