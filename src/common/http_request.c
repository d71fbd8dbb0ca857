/*-------------------------------------------------------------------------
 *
 * http_request.c
 *		The HTTP/1.x request parser of the health listener.
 *
 * Deliberately strict and small: the listener serves GET and HEAD only,
 * never reads a body, and answers anything else 405 (a well-formed
 * request with another method), 400 (anything malformed) or 431 (no end
 * of headers within max bytes), closing the connection.  It accepts:
 *
 *	request-line = method SP target SP "HTTP/1." DIGIT CRLF
 *	method       = 1 to 15 of A-Z
 *	target       = "/" followed by visible ASCII (0x21-0x7E), at most
 *	               HTTP_PATH_MAX - 1 bytes (longer: too large)
 *	header       = token ":" value CRLF, value of SP, HTAB, 0x21-0x7E and
 *	               0x80-0xFF (no bare CR or LF, no line folding)
 *	end          = CRLF
 *
 * A GET or HEAD with a body (Content-Length other than 0, or any
 * Transfer-Encoding) is malformed here.  "Connection: close" and
 * "Connection: keep-alive" are honoured; HTTP/1.1 keeps the connection by
 * default, HTTP/1.0 closes it.
 *
 * The parser looks at what has arrived so far: a prefix that cannot start
 * a valid request is refused at once (HTTP_BAD), without waiting for the
 * rest, so garbage costs no buffer and no time.  It allocates nothing and
 * reads at most max bytes.  Plain C: fuzzed by fuzz/http_fuzz.c.
 *
 * IDENTIFICATION
 *		src/common/http_request.c
 *
 *-------------------------------------------------------------------------
 */
#include "http_request.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define METHOD_MAX	15

/* a parse in progress over buf[0..end) */
typedef struct Scan
{
	const char *buf;
	size_t		end;
	size_t		pos;
} Scan;

/* RFC 9110 tchar */
static bool
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool
is_value_char(unsigned char c)
{
	return c == ' ' || c == '\t' || (c >= 0x21 && c <= 0x7E) || c >= 0x80;
}

static char
lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char) (c + ('a' - 'A')) : c;
}

/* Does [s, s+n) equal the lower-case word w, ignoring case? */
static bool
same_word(const char *s, size_t n, const char *w)
{
	if (strlen(w) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (lower(s[i]) != w[i])
			return false;
	return true;
}

/* Expect the byte c; -1: not there yet, 0: another byte, 1: consumed. */
static int
expect(Scan *s, char c)
{
	if (s->pos >= s->end)
		return -1;
	if (s->buf[s->pos] != c)
		return 0;
	s->pos++;
	return 1;
}

#define EXPECT(s, c) \
	do { \
		int			r_ = expect((s), (c)); \
		if (r_ < 0) return HTTP_INCOMPLETE; \
		if (r_ == 0) return HTTP_BAD; \
	} while (0)

/* The tokens of a Connection header's value: close, keep-alive. */
static void
connection_tokens(const char *v, size_t n, bool *close, bool *keep)
{
	size_t		i = 0;

	while (i < n)
	{
		size_t		start;
		size_t		stop;

		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		start = i;
		while (i < n && v[i] != ',')
			i++;
		stop = i;
		while (stop > start && (v[stop - 1] == ' ' || v[stop - 1] == '\t'))
			stop--;
		if (same_word(v + start, stop - start, "close"))
			*close = true;
		else if (same_word(v + start, stop - start, "keep-alive"))
			*keep = true;
	}
}

/* Parse buf[0..end); running out of bytes is HTTP_INCOMPLETE. */
static HttpParse
parse(const char *buf, size_t end, HttpRequest *req)
{
	Scan		s = {buf, end, 0};
	size_t		start;
	size_t		n;
	bool		close = false;
	bool		keep = false;
	bool		has_body = false;

	/* method */
	start = s.pos;
	while (s.pos < s.end && buf[s.pos] >= 'A' && buf[s.pos] <= 'Z')
		if (++s.pos - start > METHOD_MAX)
			return HTTP_BAD;
	if (s.pos == s.end)
		return HTTP_INCOMPLETE;
	n = s.pos - start;
	if (n == 0)
		return HTTP_BAD;
	req->method = (n == 3 && memcmp(buf + start, "GET", 3) == 0) ? HTTP_GET :
		(n == 4 && memcmp(buf + start, "HEAD", 4) == 0) ? HTTP_HEAD : HTTP_OTHER;
	EXPECT(&s, ' ');

	/* target: the path is kept up to '?' */
	EXPECT(&s, '/');
	start = s.pos - 1;
	while (s.pos < s.end && (unsigned char) buf[s.pos] >= 0x21 && (unsigned char) buf[s.pos] <= 0x7E)
		if (++s.pos - start >= HTTP_PATH_MAX)
			return HTTP_TOO_LARGE;
	if (s.pos == s.end)
		return HTTP_INCOMPLETE;
	n = s.pos - start;
	{
		const char *q = memchr(buf + start, '?', n);
		size_t		keep_n = q ? (size_t) (q - (buf + start)) : n;

		memcpy(req->path, buf + start, keep_n);
		req->path[keep_n] = '\0';
	}
	EXPECT(&s, ' ');

	/* version */
	for (const char *p = "HTTP/1."; *p; p++)
		EXPECT(&s, *p);
	if (s.pos >= s.end)
		return HTTP_INCOMPLETE;
	if (buf[s.pos] < '0' || buf[s.pos] > '9')
		return HTTP_BAD;
	req->minor = buf[s.pos++] - '0';
	EXPECT(&s, '\r');
	EXPECT(&s, '\n');

	/* headers, until an empty line */
	for (;;)
	{
		size_t		name;
		size_t		name_n;
		size_t		value;
		size_t		value_n;

		if (s.pos >= s.end)
			return HTTP_INCOMPLETE;
		if (buf[s.pos] == '\r')
		{
			s.pos++;
			EXPECT(&s, '\n');
			break;
		}
		name = s.pos;
		while (s.pos < s.end && is_tchar((unsigned char) buf[s.pos]))
			s.pos++;
		name_n = s.pos - name;
		if (s.pos < s.end && name_n == 0)
			return HTTP_BAD;	/* folding, or a stray byte */
		EXPECT(&s, ':');
		value = s.pos;
		while (s.pos < s.end && is_value_char((unsigned char) buf[s.pos]))
			s.pos++;
		value_n = s.pos - value;
		EXPECT(&s, '\r');
		EXPECT(&s, '\n');

		/* trim the value's blanks */
		while (value_n > 0 && (buf[value] == ' ' || buf[value] == '\t'))
			value++, value_n--;
		while (value_n > 0 && (buf[value + value_n - 1] == ' ' || buf[value + value_n - 1] == '\t'))
			value_n--;

		if (same_word(buf + name, name_n, "connection"))
			connection_tokens(buf + value, value_n, &close, &keep);
		else if (same_word(buf + name, name_n, "content-length"))
		{
			bool		zero = value_n > 0;

			for (size_t i = 0; i < value_n; i++)
			{
				if (buf[value + i] < '0' || buf[value + i] > '9')
					return HTTP_BAD;
				if (buf[value + i] != '0')
					zero = false;
			}
			if (!zero)
				has_body = true;
		}
		else if (same_word(buf + name, name_n, "transfer-encoding"))
			has_body = true;
	}

	if (has_body && req->method != HTTP_OTHER)
		return HTTP_BAD;
	req->keep_alive = req->method != HTTP_OTHER && !close && (req->minor >= 1 || keep);
	req->length = s.pos;
	return HTTP_OK;
}

/*
 * Parse the request at the start of buf (len bytes arrived, at most max
 * looked at).  HTTP_OK fills req (req->length: the bytes it takes; more
 * may follow, pipelined); HTTP_INCOMPLETE: what arrived is a valid start,
 * read more; HTTP_BAD, HTTP_TOO_LARGE: answer and close.
 */
HttpParse
http_parse_request(const char *buf, size_t len, size_t max, HttpRequest *req)
{
	size_t		avail = len < max ? len : max;
	HttpParse	r;

	memset(req, 0, sizeof(*req));
	r = parse(buf, avail, req);
	if (r == HTTP_INCOMPLETE && len >= max)
		r = HTTP_TOO_LARGE;
	if (r != HTTP_OK)
		memset(req, 0, sizeof(*req));
	return r;
}
