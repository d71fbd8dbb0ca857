/*-------------------------------------------------------------------------
 *
 * socket.c
 *		Corking a TCP socket: what is written while it is corked goes out in
 *		as few segments as possible when it is uncorked.  The dispatcher
 *		corks the broker's socket while it publishes a batch, hasched-worker
 *		while it writes the acks of a batch of reports: one send() per
 *		message had the broker read and handle each by itself.
 *
 * Plain C (no backend state): also linked by hasched-worker.
 *
 * IDENTIFICATION
 *		src/common/socket.c
 *
 *-------------------------------------------------------------------------
 */
#include "hs_common.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* TCP_CORK on fd, or off (which sends what it held); fd < 0: nothing */
void
hs_socket_cork(int fd, bool on)
{
	int			v = on ? 1 : 0;

	if (fd >= 0)
		(void) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v));
}
