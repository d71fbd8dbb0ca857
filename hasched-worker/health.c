/*-------------------------------------------------------------------------
 *
 * health.c
 *		GET /health on 127.0.0.1:--health-port: 200 when every check
 *		passes, 503 otherwise, with a small JSON body naming the checks.
 *
 * Deliberately small and bounded: loopback only; GET only (405 for other
 * methods, 404 for other paths); a request is read up to 1 kB and must be
 * complete within 2 s, else 400/408; at most 8 clients at once (more are
 * closed at once); one response, then the connection is closed.  Never
 * blocks: non-blocking sockets in the worker's poll() loop.
 *
 * IDENTIFICATION
 *		hasched-worker/health.c
 *
 *-------------------------------------------------------------------------
 */
#include "hw.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLIENT_TIMEOUT_USEC		2000000

int
hw_health_open(HwHealth *h, int port, char **errmsg)
{
	struct sockaddr_in addr;
	int			one = 1;
	int			fd;

	for (int i = 0; i < HW_HEALTH_MAX_CLIENTS; i++)
		h->client_fd[i] = -1;
	h->listen_fd = -1;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
	{
		*errmsg = strdup(strerror(errno));
		return -1;
	}
	(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t) port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0 || listen(fd, 16) < 0)
	{
		*errmsg = strdup(strerror(errno));
		close(fd);
		return -1;
	}
	h->listen_fd = fd;
	return 0;
}

static void
client_close(HwHealth *h, int slot)
{
	close(h->client_fd[slot]);
	h->client_fd[slot] = -1;
	h->client_len[slot] = 0;
}

void
hw_health_accept(HwHealth *h)
{
	for (;;)
	{
		int			fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		int			slot = -1;

		if (fd < 0)
			return;
		for (int i = 0; i < HW_HEALTH_MAX_CLIENTS; i++)
			if (h->client_fd[i] < 0)
			{
				slot = i;
				break;
			}
		if (slot < 0)
		{
			close(fd);			/* too many at once */
			continue;
		}
		h->client_fd[slot] = fd;
		h->client_len[slot] = 0;
		h->client_deadline[slot] = hw_now() + CLIENT_TIMEOUT_USEC;
	}
}

static void
respond(HwHealth *h, int slot, int status, const char *body)
{
	char		buf[4096 + 512];
	const char *reason = status == 200 ? "OK" : status == 503 ? "Service Unavailable" :
		status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed" :
		status == 408 ? "Request Timeout" : "Bad Request";
	int			n = snprintf(buf, sizeof(buf),
							 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
							 "Content-Length: %zu\r\nCache-Control: no-store\r\n"
							 "Connection: close\r\n%s\r\n%s",
							 status, reason, strlen(body),
							 status == 405 ? "Allow: GET\r\n" : "", body);

	/* small enough for the socket buffer of a fresh connection */
	if (n > 0)
		(void) send(h->client_fd[slot], buf, (size_t) n < sizeof(buf) ? (size_t) n : sizeof(buf) - 1,
					MSG_NOSIGNAL | MSG_DONTWAIT);
	client_close(h, slot);
}

/* The client's socket is readable: read, and answer once the request is whole. */
void
hw_health_io(HwHealth *h, int slot, HwHealthReport report)
{
	char	   *buf = h->client_buf[slot];
	size_t		cap = sizeof(h->client_buf[slot]) - 1;
	ssize_t		n;
	char		body[4096];
	char	   *sp;

	n = recv(h->client_fd[slot], buf + h->client_len[slot], cap - h->client_len[slot], 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0)
	{
		client_close(h, slot);
		return;
	}
	h->client_len[slot] += (size_t) n;
	buf[h->client_len[slot]] = '\0';
	if (strstr(buf, "\r\n\r\n") == NULL && strstr(buf, "\n\n") == NULL)
	{
		if (h->client_len[slot] >= cap)
			respond(h, slot, 400, "{\"error\": \"request too large\"}\n");
		return;
	}

	if (strncmp(buf, "GET ", 4) != 0)
	{
		respond(h, slot, 405, "{\"error\": \"only GET is served\"}\n");
		return;
	}
	sp = strchr(buf + 4, ' ');
	if (sp == NULL)
	{
		respond(h, slot, 400, "{\"error\": \"malformed request line\"}\n");
		return;
	}
	*sp = '\0';
	if (strcmp(buf + 4, "/health") != 0 && strncmp(buf + 4, "/health?", 8) != 0)
	{
		respond(h, slot, 404, "{\"error\": \"not found; try GET /health\"}\n");
		return;
	}
	respond(h, slot, report(body, sizeof(body)), body);
}

/* Close the clients that did not send a whole request in time. */
void
hw_health_expire(HwHealth *h, int64_t now)
{
	for (int i = 0; i < HW_HEALTH_MAX_CLIENTS; i++)
		if (h->client_fd[i] >= 0 && now >= h->client_deadline[i])
			respond(h, i, 408, "{\"error\": \"request timeout\"}\n");
}
