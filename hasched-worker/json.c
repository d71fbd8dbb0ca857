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
				unsigned	code = 0;

				for (int i = 0; i < 4; i++)
				{
					char		h;

					if (j->p >= j->end)
						return false;
					h = *j->p++;
					code <<= 4;
					if (is_digit(h))
						code |= (unsigned) (h - '0');
					else if (h >= 'a' && h <= 'f')
						code |= (unsigned) (h - 'a' + 10);
					else if (h >= 'A' && h <= 'F')
						code |= (unsigned) (h - 'A' + 10);
					else
						return false;
				}
				if (code == 0)
					return false;	/* jsonb refuses \u0000 */
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
