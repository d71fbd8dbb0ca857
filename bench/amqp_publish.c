/*
 * amqp_publish.c: the baseline of the dispatcher bench (bench/bench.pl,
 * step "dispatch"): a bare librabbitmq publisher with publisher confirms.
 * It declares QUEUE (durable, of TYPE: quorum or classic), then publishes
 * COUNT persistent messages of BYTES bytes in batches of BATCH, waiting
 * for the confirms of each batch before the next (as the dispatcher does),
 * and prints "<count> <seconds> <per second> <nacked>".
 *
 * usage: amqp_publish HOST PORT QUEUE TYPE COUNT BATCH BYTES
 *
 * Copyright: hasched contributors
 *
 * IDENTIFICATION
 *	bench/amqp_publish.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
check(amqp_rpc_reply_t r, const char *what)
{
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
	{
		fprintf(stderr, "%s failed (reply type %d)\n", what, r.reply_type);
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	amqp_connection_state_t conn;
	amqp_socket_t *sock;
	amqp_table_entry_t arg;
	amqp_table_t args;
	amqp_basic_properties_t props;
	long		count,
				batch,
				bytes;
	long		sent = 0,
				nacked = 0;
	uint64_t	tag = 0;
	char	   *body;
	double		t0,
				t1;

	if (argc != 8)
	{
		fprintf(stderr, "usage: %s HOST PORT QUEUE TYPE COUNT BATCH BYTES\n", argv[0]);
		return 64;
	}
	count = atol(argv[5]);
	batch = atol(argv[6]);
	bytes = atol(argv[7]);
	body = malloc(bytes + 1);
	memset(body, 'x', bytes);
	body[bytes] = '\0';

	conn = amqp_new_connection();
	sock = amqp_tcp_socket_new(conn);
	if (amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK)
	{
		fprintf(stderr, "cannot connect\n");
		return 1;
	}
	check(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
	amqp_channel_open(conn, 1);
	check(amqp_get_rpc_reply(conn), "channel.open");
	amqp_confirm_select(conn, 1);
	check(amqp_get_rpc_reply(conn), "confirm.select");
	arg.key = amqp_cstring_bytes("x-queue-type");
	arg.value.kind = AMQP_FIELD_KIND_UTF8;
	arg.value.value.bytes = amqp_cstring_bytes(argv[4]);
	args.num_entries = 1;
	args.entries = &arg;
	amqp_queue_declare(conn, 1, amqp_cstring_bytes(argv[3]), 0, 1, 0, 0, args);
	check(amqp_get_rpc_reply(conn), "queue.declare");

	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
		AMQP_BASIC_MESSAGE_ID_FLAG;
	props.content_type = amqp_cstring_bytes("application/json");
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;

	t0 = now();
	while (sent < count)
	{
		long		n = count - sent < batch ? count - sent : batch;
		uint64_t	last;
		uint64_t	confirmed = tag;
		char		id[32];

		for (long i = 0; i < n; i++)
		{
			snprintf(id, sizeof(id), "%ld:1", sent + i);
			props.message_id = amqp_cstring_bytes(id);
			if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(argv[3]),
								   1, 0, &props, amqp_cstring_bytes(body)) != AMQP_STATUS_OK)
			{
				fprintf(stderr, "publish failed\n");
				return 1;
			}
		}
		last = tag + n;
		while (confirmed < last)
		{
			amqp_frame_t f;

			if (amqp_simple_wait_frame(conn, &f) != AMQP_STATUS_OK)
			{
				fprintf(stderr, "connection lost\n");
				return 1;
			}
			if (f.frame_type != AMQP_FRAME_METHOD)
				continue;
			if (f.payload.method.id == AMQP_BASIC_ACK_METHOD)
				confirmed = ((amqp_basic_ack_t *) f.payload.method.decoded)->delivery_tag;
			else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD)
			{
				uint64_t	t = ((amqp_basic_nack_t *) f.payload.method.decoded)->delivery_tag;

				nacked += ((amqp_basic_nack_t *) f.payload.method.decoded)->multiple ?
					(long) (t - confirmed) : 1;
				confirmed = t;
			}
		}
		tag = last;
		sent += n;
		amqp_maybe_release_buffers(conn);
	}
	t1 = now();
	printf("%ld %.3f %.1f %ld\n", count, t1 - t0, count / (t1 - t0), nacked);
	amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
	return 0;
}
