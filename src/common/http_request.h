/*-------------------------------------------------------------------------
 *
 * http_request.h
 *		The HTTP/1.x request parser of the health listener: plain C, no
 *		allocation, no backend state (also linked by the fuzzer).
 *
 * IDENTIFICATION
 *		src/common/http_request.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HTTP_REQUEST_H
#define HTTP_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_PATH_MAX		256		/* the path kept, its NUL included */

typedef enum HttpParse
{
	HTTP_INCOMPLETE = 0,		/* no end of headers yet: read more */
	HTTP_OK,					/* a whole request: see HttpRequest */
	HTTP_BAD,					/* malformed: answer 400 and close */
	HTTP_TOO_LARGE				/* no end of headers within max: 431, close */
} HttpParse;

typedef enum HttpMethod
{
	HTTP_GET = 0,
	HTTP_HEAD,
	HTTP_OTHER					/* a well-formed method we do not serve: 405 */
} HttpMethod;

typedef struct HttpRequest
{
	HttpMethod	method;
	char		path[HTTP_PATH_MAX];	/* the target up to '?', NUL-terminated */
	int			minor;			/* HTTP/1.minor */
	bool		keep_alive;		/* the connection stays open after the answer */
	size_t		length;			/* bytes of the request (line and headers) */
} HttpRequest;

extern HttpParse http_parse_request(const char *buf, size_t len, size_t max,
									HttpRequest *req);

#endif							/* HTTP_REQUEST_H */
