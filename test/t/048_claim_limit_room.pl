
# Copyright: hasched contributors
#
# 048_claim_limit_room.pl: a claim on a queue with a concurrency limit takes
# all the room there is at one instant, and counts no job twice.
#
#   Two sessions, A and B, each claim one job of a queue with limit 2,
#   commit, complete it, commit, over and over (an old snapshot held open
#   meanwhile, as in `make stress`).  Neither ever holds more than one job,
#   and a session's own previous job is completed before it claims again,
#   so at any instant the other session holds at most one: every claim has
#   room for one and must get one.  A claim that came back empty counted a
#   job twice: one whose end its count did not see beside the next one's
#   reservation, or one whose commit its count saw while the reservation
#   of that claim was still there (the stress run's "short claims with
#   room" on the limited queues, issue 7).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/048_claim_limit_room.pl
use strict;
use warnings;

use HaschedCluster;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

my $rounds = 1500;

my $node = HaschedCluster->primary(
	'room', conf => q{
fsync = off
});
$node->safe_psql(
	'postgres', qq{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease, concurrency) VALUES ('room', '1 hour', 2);
	SELECT hasched.submit_many('room', array_fill('{}'::jsonb, ARRAY[2 * $rounds + 100]));
	CREATE TABLE room_result (who text, rounds int, empty int);
});

# an old snapshot, so that dead index entries pile up and counts take longer
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$holder->query_safe('SELECT count(*) FROM hasched.job');

sub loop_sql
{
	my ($who) = @_;
	return qq{
DO \$\$
DECLARE
	r record;
	empty int := 0;
BEGIN
	FOR i IN 1..$rounds LOOP
		SELECT c.job_id, c.token INTO r FROM hasched.claim('room', '$who', 1) c;
		IF NOT FOUND THEN
			empty := empty + 1;
			COMMIT;
			CONTINUE;
		END IF;
		COMMIT;
		PERFORM hasched.complete(r.job_id, r.token, NULL);
		COMMIT;
	END LOOP;
	INSERT INTO room_result VALUES ('$who', $rounds, empty);
END
\$\$;};
}

my @h;
for my $who ('a', 'b')
{
	my ($out, $err) = ('', '');
	push @h,
	  [
		IPC::Run::start(
			[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
			  '-c', loop_sql($who) ],
			'>', \$out, '2>', \$err),
		\$out, \$err, $who
	  ];
}
for my $x (@h)
{
	my ($run, $out, $err, $who) = @$x;
	ok($run->finish, "session $who ran its $rounds rounds") or diag $$err;
}
$holder->query_safe('COMMIT');
$holder->quit;

my $res = $node->safe_psql('postgres',
	'SELECT who, rounds, empty FROM room_result ORDER BY who');
note "who|rounds|empty claims:\n$res";
for my $row (split /\n/, $res)
{
	my ($who, $n, $empty) = split /\|/, $row;
	is($empty, 0,
		"session $who: every claim had room for one job (the other session holds at most one) and got it"
	);
}
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM hasched.job WHERE queue = 'room' AND state = 'running'}),
	'0', 'every claimed job was completed');

$node->stop;
done_testing();
