/*
 * hasched_amqp_get.c: a small AMQP client for the TAP tests: takes up to
 * MAX messages from QUEUE by basic.get and prints one line per message:
 * message_id, routing key, redelivered (0/1) and the body, tab-separated.
 * With "ack" each message is acked; with "noack" they are left unacked
 * and return to the queue when the client disconnects.  With "publish"
 * it publishes instead: each line of stdin is the body of a persistent
 * message to QUEUE (the default exchange), waiting for the broker's
 * confirms (MAX is ignored).
 *
 * usage: hasched_amqp_get HOST PORT QUEUE MAX ack|noack|publish
 *
 * Copyright: hasched contributors
 *
 * IDENTIFICATION
 *	test/perl/hasched_amqp_get.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>

static void
die_reply(amqp_rpc_reply_t r, const char *what)
{
	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return;
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
		fprintf(stderr, "%s: %s\n", what, amqp_error_string2(r.library_error));
	else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
	{
		amqp_channel_close_t *c = r.reply.decoded;

		fprintf(stderr, "%s: channel closed: %.*s\n", what,
				(int) c->reply_text.len, (char *) c->reply_text.bytes);
	}
	else
		fprintf(stderr, "%s: server error %x\n", what, r.reply.id);
	exit(1);
}

int
main(int argc, char **argv)
{
	amqp_connection_state_t conn;
	amqp_socket_t *sock;
	int			max,
				ack,
				i;

	if (argc != 6)
	{
		fprintf(stderr, "usage: %s HOST PORT QUEUE MAX ack|noack|publish\n", argv[0]);
		return 64;
	}
	max = atoi(argv[4]);
	ack = strcmp(argv[5], "ack") == 0;
	conn = amqp_new_connection();
	sock = amqp_tcp_socket_new(conn);
	if (!sock || amqp_socket_open(sock, argv[1], atoi(argv[2])) != AMQP_STATUS_OK)
	{
		fprintf(stderr, "cannot connect to %s:%s\n", argv[1], argv[2]);
		return 1;
	}
	die_reply(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
						 "guest", "guest"), "login");
	amqp_channel_open(conn, 1);
	die_reply(amqp_get_rpc_reply(conn), "channel.open");
	if (strcmp(argv[5], "publish") == 0)
	{
		char		line[65536];
		int			n = 0;
		amqp_basic_properties_t props;

		amqp_confirm_select(conn, 1);
		die_reply(amqp_get_rpc_reply(conn), "confirm.select");
		props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
		props.delivery_mode = 2;
		while (fgets(line, sizeof(line), stdin) != NULL)
		{
			line[strcspn(line, "\n")] = '\0';
			if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(argv[3]),
								   1, 0, &props, amqp_cstring_bytes(line)) != AMQP_STATUS_OK)
			{
				fprintf(stderr, "basic.publish failed\n");
				return 1;
			}
			n++;
		}
		/* the confirms (and a basic.return, were the queue missing) */
		while (n > 0)
		{
			amqp_frame_t f;

			if (amqp_simple_wait_frame(conn, &f) != AMQP_STATUS_OK)
			{
				fprintf(stderr, "waiting for confirms failed\n");
				return 1;
			}
			if (f.frame_type != AMQP_FRAME_METHOD)
				continue;
			if (f.payload.method.id == AMQP_BASIC_ACK_METHOD)
			{
				amqp_basic_ack_t *a = f.payload.method.decoded;

				n = a->multiple ? 0 : n - 1;
			}
			else if (f.payload.method.id == AMQP_BASIC_RETURN_METHOD ||
					 f.payload.method.id == AMQP_BASIC_NACK_METHOD)
			{
				fprintf(stderr, "a message was returned or nacked\n");
				return 1;
			}
		}
		amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
		amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
		amqp_destroy_connection(conn);
		return 0;
	}
	for (i = 0; i < max; i++)
	{
		amqp_rpc_reply_t r;
		amqp_basic_get_ok_t *ok;
		amqp_message_t msg;

		r = amqp_basic_get(conn, 1, amqp_cstring_bytes(argv[3]), 0);
		die_reply(r, "basic.get");
		if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
			break;
		ok = r.reply.decoded;
		{
			uint64_t	tag = ok->delivery_tag;
			int			redelivered = ok->redelivered;
			char	   *rk = strndup(ok->routing_key.bytes, ok->routing_key.len);

			die_reply(amqp_read_message(conn, 1, &msg, 0), "read message");
			if (msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
				printf("%.*s", (int) msg.properties.message_id.len,
					   (char *) msg.properties.message_id.bytes);
			printf("\t%s\t%d\t%.*s\n", rk, redelivered,
				   (int) msg.body.len, (char *) msg.body.bytes);
			free(rk);
			amqp_destroy_message(&msg);
			if (ack)
				amqp_basic_ack(conn, 1, tag, 0);
		}
		amqp_maybe_release_buffers(conn);
	}
	fflush(stdout);
	amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
	return 0;
}
