/*-------------------------------------------------------------------------
 *
 * json.c
 *		What a command printed, made fit for the database: a JSON syntax
 *		check (stdout that is JSON becomes the result as it is; anything
 *		else becomes a JSON string), and UTF-8 clean-up (the server refuses
 *		invalid UTF-8 and NUL bytes in text).
 *
 * IDENTIFICATION
 *		hasched-worker/json.c
 *
 *-------------------------------------------------------------------------
 */
#include "hw.h"

#include <string.h>

#define JSON_MAX_DEPTH	200

typedef struct JsonParse
{
	const char *p;
	const char *end;
} JsonParse;

static bool json_value(JsonParse *j, int depth);

static void
json_space(JsonParse *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool
json_literal(JsonParse *j, const char *word)
{
	size_t		n = strlen(word);

	if ((size_t) (j->end - j->p) < n || memcmp(j->p, word, n) != 0)
		return false;
	j->p += n;
	return true;
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
json_number(JsonParse *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p >= j->end)
		return false;
	if (*j->p == '0')
		j->p++;
	else if (is_digit(*j->p))
		while (j->p < j->end && is_digit(*j->p))
			j->p++;
	else
		return false;
	if (j->p < j->end && *j->p == '.')
	{
		j->p++;
		if (j->p >= j->end || !is_digit(*j->p))
			return false;
		while (j->p < j->end && is_digit(*j->p))
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E'))
	{
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end || !is_digit(*j->p))
			return false;
		while (j->p < j->end && is_digit(*j->p))
			j->p++;
	}
	return true;
}

/* The four hex digits at p (four bytes there) as a number, or -1 if one is not hex. */
static int
hex4(const char *p)
{
	int			v = 0;

	for (int i = 0; i < 4; i++)
	{
		char		h = p[i];

		v <<= 4;
		if (is_digit(h))
			v |= h - '0';
		else if (h >= 'a' && h <= 'f')
			v |= h - 'a' + 10;
		else if (h >= 'A' && h <= 'F')
			v |= h - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static bool
json_string(JsonParse *j)
{
	if (j->p >= j->end || *j->p != '"')
		return false;
	j->p++;
	while (j->p < j->end)
	{
		unsigned char c = (unsigned char) *j->p++;

		if (c == '"')
			return true;
		if (c < 0x20)
			return false;
		if (c == '\\')
		{
			if (j->p >= j->end)
				return false;
			c = (unsigned char) *j->p++;
			if (c == 'u')
			{
				int			code = j->end - j->p >= 4 ? hex4(j->p) : -1;

				/* (jsonb refuses \u0000) */
				if (code <= 0)
					return false;
				j->p += 4;
			}
			else if (!strchr("\"\\/bfnrt", c))
				return false;
		}
	}
	return false;
}

static bool
json_value(JsonParse *j, int depth)
{
	if (depth > JSON_MAX_DEPTH)
		return false;
	json_space(j);
	if (j->p >= j->end)
		return false;
	switch (*j->p)
	{
		case '{':
			j->p++;
			json_space(j);
			if (j->p < j->end && *j->p == '}')
			{
				j->p++;
				return true;
			}
			for (;;)
			{
				json_space(j);
				if (!json_string(j))
					return false;
				json_space(j);
				if (j->p >= j->end || *j->p++ != ':')
					return false;
				if (!json_value(j, depth + 1))
					return false;
				json_space(j);
				if (j->p >= j->end)
					return false;
				if (*j->p == '}')
				{
					j->p++;
					return true;
				}
				if (*j->p++ != ',')
					return false;
			}
		case '[':
			j->p++;
			json_space(j);
			if (j->p < j->end && *j->p == ']')
			{
				j->p++;
				return true;
			}
			for (;;)
			{
				if (!json_value(j, depth + 1))
					return false;
				json_space(j);
				if (j->p >= j->end)
					return false;
				if (*j->p == ']')
				{
					j->p++;
					return true;
				}
				if (*j->p++ != ',')
					return false;
			}
		case '"':
			return json_string(j);
		case 't':
			return json_literal(j, "true");
		case 'f':
			return json_literal(j, "false");
		case 'n':
			return json_literal(j, "null");
		default:
			return json_number(j);
	}
}

/* Is s[0..len) one JSON value (RFC 8259), with optional white space around? */
bool
hw_json_valid(const char *s, size_t len)
{
	JsonParse	j = {s, s + len};

	if (memchr(s, '\0', len) != NULL)
		return false;
	if (!json_value(&j, 0))
		return false;
	json_space(&j);
	return j.p == j.end;
}

/*
 * Replace every byte that is not part of valid UTF-8 (and every NUL) with
 * '?', in place.  A sequence cut at the end of the buffer (output bounded
 * in the middle of a character) is replaced too.
 */
void
hw_utf8_clean(char *s, size_t len)
{
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = (unsigned char) s[i];
		size_t		n;
		unsigned	cp;

		if (c == 0)
		{
			s[i++] = '?';
			continue;
		}
		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			n = 2, cp = c & 0x1F;
		else if (c >= 0xE0 && c <= 0xEF)
			n = 3, cp = c & 0x0F;
		else if (c >= 0xF0 && c <= 0xF4)
			n = 4, cp = c & 0x07;
		else
		{
			s[i++] = '?';
			continue;
		}
		if (i + n > len)
		{
			s[i++] = '?';
			continue;
		}
		{
			bool		ok = true;

			for (size_t k = 1; k < n; k++)
			{
				unsigned char cc = (unsigned char) s[i + k];

				if ((cc & 0xC0) != 0x80)
				{
					ok = false;
					break;
				}
				cp = (cp << 6) | (cc & 0x3F);
			}
			/* overlong forms, surrogates, beyond U+10FFFF */
			if (ok && ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
					   (cp >= 0xD800 && cp <= 0xDFFF)))
				ok = false;
			if (!ok)
			{
				s[i++] = '?';
				continue;
			}
		}
		i += n;
	}
}

/*
 * The value of the member key of the JSON object s[0..len), at the top
 * level: *val and *vlen span its text.  False when s is not an object or
 * has no such member (keys are compared as written: the contract's keys
 * have no escapes).
 */
bool
hw_json_member(const char *s, size_t len, const char *key, const char **val, size_t *vlen)
{
	JsonParse	j = {s, s + len};
	size_t		klen = strlen(key);

	json_space(&j);
	if (j.p >= j.end || *j.p++ != '{')
		return false;
	json_space(&j);
	if (j.p < j.end && *j.p == '}')
		return false;
	for (;;)
	{
		const char *k;
		const char *v;
		bool		match;

		json_space(&j);
		k = j.p;
		if (!json_string(&j))
			return false;
		match = (size_t) (j.p - k) == klen + 2 && memcmp(k + 1, key, klen) == 0;
		json_space(&j);
		if (j.p >= j.end || *j.p++ != ':')
			return false;
		json_space(&j);
		v = j.p;
		if (!json_value(&j, 1))
			return false;
		if (match)
		{
			*val = v;
			*vlen = (size_t) (j.p - v);
			return true;
		}
		json_space(&j);
		if (j.p >= j.end || *j.p == '}')
			return false;
		if (*j.p++ != ',')
			return false;
	}
}

static void
put_utf8(char *out, size_t *o, unsigned cp)
{
	if (cp < 0x80)
		out[(*o)++] = (char) cp;
	else if (cp < 0x800)
	{
		out[(*o)++] = (char) (0xC0 | (cp >> 6));
		out[(*o)++] = (char) (0x80 | (cp & 0x3F));
	}
	else if (cp < 0x10000)
	{
		out[(*o)++] = (char) (0xE0 | (cp >> 12));
		out[(*o)++] = (char) (0x80 | ((cp >> 6) & 0x3F));
		out[(*o)++] = (char) (0x80 | (cp & 0x3F));
	}
	else
	{
		out[(*o)++] = (char) (0xF0 | (cp >> 18));
		out[(*o)++] = (char) (0x80 | ((cp >> 12) & 0x3F));
		out[(*o)++] = (char) (0x80 | ((cp >> 6) & 0x3F));
		out[(*o)++] = (char) (0x80 | (cp & 0x3F));
	}
}

/*
 * The JSON string val[0..vlen) (as hw_json_member spans it) unescaped into
 * out (NUL-terminated, UTF-8).  False when it is not a string, or does not
 * fit in size bytes.
 */
bool
hw_json_string_value(const char *val, size_t vlen, char *out, size_t size)
{
	JsonParse	j = {val, val + vlen};
	size_t		o = 0;

	if (!json_string(&j) || j.p != j.end || size == 0)
		return false;
	for (const char *p = val + 1; p < val + vlen - 1;)
	{
		unsigned	cp;

		if (o + 5 > size)
			return false;
		if (*p != '\\')
		{
			out[o++] = *p++;
			continue;
		}
		p++;
		switch (*p)
		{
			case 'b':
				cp = '\b';
				break;
			case 'f':
				cp = '\f';
				break;
			case 'n':
				cp = '\n';
				break;
			case 'r':
				cp = '\r';
				break;
			case 't':
				cp = '\t';
				break;
			case 'u':
				{
					int			hi = hex4(p + 1);

					p += 4;
					cp = (unsigned) hi;
					/* a surrogate pair: the low half follows as \uDC00..\uDFFF */
					if (hi >= 0xD800 && hi <= 0xDBFF && p + 6 < val + vlen &&
						p[1] == '\\' && p[2] == 'u')
					{
						int			lo = hex4(p + 3);

						if (lo >= 0xDC00 && lo <= 0xDFFF)
						{
							cp = 0x10000 + (((unsigned) hi - 0xD800) << 10) + ((unsigned) lo - 0xDC00);
							p += 6;
						}
					}
					if (cp >= 0xD800 && cp <= 0xDFFF)
						cp = 0xFFFD;	/* a lone surrogate */
					break;
				}
			default:
				cp = (unsigned char) *p;	/* " \ / */
				break;
		}
		p++;
		put_utf8(out, &o, cp);
	}
	out[o] = '\0';
	return true;
}
