/*-------------------------------------------------------------------------
 *
 * hs_common.h
 *		Plain C shared by the extension, the hasched-worker program, the
 *		unit tests and the fuzzers: lease tokens and the retry backoff.
 *		No PostgreSQL backend headers and no backend state here.
 *
 * IDENTIFICATION
 *		src/common/hs_common.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HS_COMMON_H
#define HS_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Room for "epoch:attempt:lease_id" with the largest values, and the NUL. */
#define HS_TOKEN_BUFSZ	48

/*
 * A lease token names one attempt of one job: the scheduler epoch it was
 * granted in, the attempt number and the lease id.  Written
 * "epoch:attempt:lease_id" in decimal.
 */
extern void hs_token_format(char *buf, size_t bufsz, int32_t epoch,
							int32_t attempt, int64_t lease_id);
extern bool hs_token_parse(const char *token, int32_t *epoch,
						   int32_t *attempt, int64_t *lease_id);

/* TCP_CORK on a socket, or off (see socket.c). */
extern void hs_socket_cork(int fd, bool on);

/* Delay before the next attempt, in microseconds (see backoff.c). */
extern int64_t hs_backoff_usec(int attempt, int64_t base_usec,
							   int64_t cap_usec, double jitter);

#endif							/* HS_COMMON_H */
